"""PoolConfig: defaults and validation that names the key."""
from __future__ import annotations

import pytest

import snakepit
from snakepit import ConfigError, PoolConfig


def test_defaults_follow_snakepit_v06():
    cfg = PoolConfig()
    assert cfg.name == "default"
    assert cfg.profile == "process"
    assert cfg.pool_size >= 1
    assert cfg.max_queue_size == 1000
    assert cfg.queue_timeout == 5.0
    assert cfg.threads_per_worker == 10
    assert cfg.adapter == "snakepit.worker.builtin:DefaultAdapter"
    assert cfg.capacity_per_worker == 1
    thread = PoolConfig(profile="thread", pool_size=2, threads_per_worker=8)
    assert thread.capacity_per_worker == 8 and thread.total_capacity == 16


@pytest.mark.parametrize(
    "options, key",
    [
        ({"profile": "fiber"}, "profile"),
        ({"pool_size": 0}, "pool_size"),
        ({"pool_size": "4"}, "pool_size"),
        ({"pool_size": True}, "pool_size"),
        ({"threads_per_worker": 0}, "threads_per_worker"),
        ({"adapter": "no_colon_here"}, "adapter"),
        ({"adapter": "mod:"}, "adapter"),
        ({"env": {"A": 1}}, "env"),
        ({"python": "/nonexistent/python"}, "python"),
        ({"worker_ttl": -1}, "worker_ttl"),
        ({"worker_max_requests": 0}, "worker_max_requests"),
        ({"memory_threshold_mb": 0}, "memory_threshold_mb"),
        ({"max_queue_size": -1}, "max_queue_size"),
        ({"queue_timeout": 0}, "queue_timeout"),
        ({"request_timeout": "soon"}, "request_timeout"),
        ({"heartbeat_interval": float("nan")}, "heartbeat_interval"),
        ({"recycle_jitter": 2}, "recycle_jitter"),
        ({"max_message_mb": 0}, "max_message_mb"),
        ({"cwd": "/definitely/not/here"}, "cwd"),
    ],
)
def test_bad_values_name_the_key(options, key):
    with pytest.raises(ConfigError) as info:
        snakepit.start_pool("bad", **options)
    assert info.value.key == key
    assert key in str(info.value)
    assert not snakepit.list_pools()


def test_unknown_setting_suggests_the_right_one():
    with pytest.raises(ConfigError) as info:
        snakepit.start_pool("bad", pool_szie=2)
    assert info.value.key == "pool_szie"
    assert "pool_size" in str(info.value)


def test_config_and_keywords_are_exclusive():
    with pytest.raises(ConfigError):
        snakepit.start_pool(config=PoolConfig(pool_size=1), pool_size=2)


def test_config_is_immutable_and_replace_validates():
    cfg = PoolConfig(pool_size=2)
    with pytest.raises(Exception):
        cfg.pool_size = 3  # type: ignore[misc]
    assert cfg.replace(pool_size=3).pool_size == 3
    with pytest.raises(ConfigError):
        cfg.replace(pool_size=-3)
