"""Diagnostics: the profile-aware inspector, history, memory projection, recommendations.

Diagnostics read the pool; they never steer it.
"""
