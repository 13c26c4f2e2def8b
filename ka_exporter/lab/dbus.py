"""A private D-Bus system bus per lab node, so keepalived's `enable_dbus` works without systemd."""

from __future__ import annotations

from pathlib import Path

KEEPALIVED_BUS_NAME = "org.keepalived.Vrrp1"

# The essentials of Debian's /usr/share/dbus-1/system.conf plus keepalived's own policy file
# (/etc/dbus-1/system.d/org.keepalived.Vrrp1.conf): root may own org.keepalived.Vrrp1 and call it; anyone may
# introspect it and read its properties.
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.keepalived.Vrrp1" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.keepalived.Vrrp1" send_interface="org.freedesktop.DBus.Peer"/>
    <allow send_destination="org.keepalived.Vrrp1" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow own="org.keepalived.Vrrp1"/>
    <allow send_destination="org.keepalived.Vrrp1"/>
  </policy>
</busconfig>
"""

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def bus_config(socket: Path) -> str:
    """dbus-daemon configuration for a bus listening on `socket`."""
    return _BUS_CONFIG.format(socket=socket)


def name_has_owner(address: str, name: str = KEEPALIVED_BUS_NAME) -> bool:
    """True if `name` is owned on the bus at `address`; False if not, or if the bus cannot be reached."""
    from jeepney import DBusAddress, new_method_call  # only dbus labs need jeepney
    from jeepney.io.blocking import open_dbus_connection

    bus = DBusAddress(
        "/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus"
    )
    try:
        with open_dbus_connection(bus=address, auth_timeout=1.0) as conn:
            reply = conn.send_and_get_reply(new_method_call(bus, "NameHasOwner", "s", (name,)), timeout=1.0)
    except (OSError, ValueError, TimeoutError, RuntimeError):
        return False
    return bool(reply.body and reply.body[0])
