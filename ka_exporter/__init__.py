"""ka-exporter: Prometheus exporter and split-brain watchdog for keepalived (VRRP)."""

__version__ = "0.1.0"
