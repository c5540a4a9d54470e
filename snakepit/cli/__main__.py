"""``python -m snakepit.cli``: the ``snakepit`` command."""
from snakepit.cli import main

if __name__ == "__main__":
    main()
