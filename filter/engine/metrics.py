"""Prometheus metrics for `spamsift daemon --metrics` and `spamsift watch --metrics`.

The one place prometheus_client is imported, and only when a command is asked to serve
metrics (HOST:PORT, text format at ``/metrics``; docs/metrics.md says more of each). Every name
starts with ``spamsift_``:

| name | type | labels | what |
|---|---|---|---|
| ``spamsift_messages_total`` | counter | result, unsure | messages the daemon filtered |
| ``spamsift_passed_through_total`` | counter | reason | passed on unfiltered, or tempfailed |
| ``spamsift_retrains_total`` | counter | source | corrections, corpus learning, unlearning |
| ``spamsift_request_seconds`` | histogram | | time the daemon took for a request |
| ``spamsift_unfiltered_total`` | counter | reason | unfiltered, any uid; in-process fallbacks |
| ``spamsift_daemon_up`` | gauge | | 1 when the daemon's socket takes a connection (watcher) |
| ``spamsift_watch_queue_depth`` | gauge | | trainings the watcher has queued |
| ``spamsift_watch_scan_seconds`` | gauge | | how long the watcher's last scan took |
| ``spamsift_watch_trained_total`` | counter | action | what the watcher's trainings did |
"""

from __future__ import annotations

from spamsift.filter.engine.errors import UsageError


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (HOST may be empty: 127.0.0.1; [::1]:PORT for IPv6); UsageError else."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics takes HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class Metrics:
    """The metrics of one process, in a registry of its own."""

    def __init__(self, home: str | None = None, daemon_socket: str | None = None) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:  # a broken install: one line, not a traceback
            from spamsift.filter.engine.errors import UsageError

            raise UsageError(f"needs the prometheus_client package ({exc}); install "
                             "spamsift with its dependencies") from None

        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("spamsift_messages_total", "Messages filtered, by result",
                                ["result", "unsure"], registry=r)
        self.passed = Counter("spamsift_passed_through_total",
                              "Messages passed on unfiltered or tempfailed, by reason",
                              ["reason"], registry=r)
        self.retrains = Counter("spamsift_retrains_total", "Trainings of a known class, by "
                                "source (error: a correction)", ["source"], registry=r)
        self.request_seconds = Histogram(
            "spamsift_request_seconds", "Time to answer one request",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=r)
        self.queue_depth = Gauge("spamsift_watch_queue_depth", "Trainings queued by the "
                                 "watcher", registry=r)
        self.scan_seconds = Gauge("spamsift_watch_scan_seconds", "Duration of the watcher's "
                                  "last scan", registry=r)
        self.trained = Counter("spamsift_watch_trained_total", "The watcher's trainings, by "
                               "what they did", ["action"], registry=r)
        if home is not None:
            r.register(_Unfiltered(home))
        if daemon_socket:
            r.register(_DaemonUp(daemon_socket))

    def serve(self, address: str) -> None:
        """Serve /metrics on `address` (HOST:PORT) from a thread. Raises OSError."""
        from prometheus_client import start_http_server

        host, port = parse_address(address)
        start_http_server(port, addr=host, registry=self.registry)

    def observe(self, kind: str, label: str, extra: str = "") -> None:
        """The filter's report of what it did (`spamsift.filter.cli.Seams.observe`)."""
        if kind == "message":
            self.messages.labels(label, extra or "no").inc()
        elif kind == "passed_through":
            self.passed.labels(label).inc()
        elif kind == "retrain":
            self.retrains.labels(label).inc()


class _Unfiltered:
    """spamsift_unfiltered_total from the passlog files, read at each scrape: every uid's
    count, the thin clients' fallbacks included, which no single process sees."""

    def __init__(self, home: str) -> None:
        self.home = home

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        from spamsift.filter.engine import passlog

        family = CounterMetricFamily("spamsift_unfiltered", "Messages any uid passed on "
                                     "unfiltered, tempfailed or filtered in-process instead of "
                                     "through the daemon, by reason (passlog)", labels=["reason"])
        totals: dict[str, int] = {}
        try:
            found = passlog.counts(self.home, 0)
        except OSError as exc:
            # No samples rather than zeros that look like a clean week (alert on absent()).
            from spamsift.filter.engine import log

            log.error(f"metrics: cannot count unfiltered mail: {exc.filename}: "
                      f"{exc.strerror or exc}", True)
            return
        for (_day, reason, _user), n in found.items():
            totals[reason] = totals.get(reason, 0) + n
        # Known reasons only: a uid writes its own file, and must not be able to invent
        # label values by the thousand.
        for reason in (*passlog.REASONS, *passlog.FALLBACKS):
            family.add_metric([reason], totals.get(reason, 0))
        yield family


class _DaemonUp:
    """spamsift_daemon_up: whether the daemon's socket takes a connection, at each scrape."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self):
        import socket

        from prometheus_client.core import GaugeMetricFamily

        up = 0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(1.0)
        try:
            sock.connect(self.path)
            up = 1
        except OSError:
            pass
        finally:
            sock.close()
        yield GaugeMetricFamily("spamsift_daemon_up", "1 when the spamsift daemon's socket "
                                "takes a connection", value=up)
