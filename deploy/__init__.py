"""Serving beyond one process: nginx in front of several replicas, a container health check.

`python -m deploy.cluster` (`make cluster`) runs N replicas of the server behind nginx on one
host; nginx_conf.py fills the nginx template, nginx_reload.py reloads nginx with it, and
healthcheck.py is the container's HEALTHCHECK.
"""
