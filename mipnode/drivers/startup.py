"""Errors at a daemon's start that the operator can fix: the CLI prints each as one line."""


class StartupError(Exception):
    pass


class ClusterUnavailable(StartupError):
    """[ha.cluster] cannot start: etcd unreachable or refusing, the home link missing, or
    etcd's client not installed."""
