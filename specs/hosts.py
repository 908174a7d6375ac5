"""Names and addresses of /etc/hosts entries beyond a container's key and hostname: its
`extra_hosts` (Docker's `--add-host`, Compose's `extra_hosts`) and its `aliases` on a network.

Names are held to DNS's alphabet: they are written into a file where a blank or a `#` would
end the name, and a name a resolver cannot look up is a typo worth naming."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from specs.errors import quoted
from specs.fields import describe_value, quote_hint, reject_scalar, unzoned

HOST_GATEWAY = "host-gateway"
"""Docker's word for the host as the container sees it: here the gateway of its default route."""
DNS_NAME_RULE = ("use dot-separated labels of 1 to 63 letters, digits, '-' or '_' (no '-' at a label's "
                  "start or end), 253 characters at most")
EXTRA_HOST_TEXT = "'NAME:ADDRESS' or 'NAME=ADDRESS'"
EXTRA_HOST_FORMS = f"{EXTRA_HOST_TEXT} or a mapping {{host, ip}}"
SEPARATORS = ("=", ":")
"""Where an entry's name ends, tried in this order (as compose-go: `name=::1` reads well)."""
_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_MAX_NAME = 253


def is_dns_name(value: str) -> bool:
    return len(value) <= _MAX_NAME and all(_LABEL_RE.fullmatch(label) for label in value.split("."))


def check_dns_name(value: str) -> str:
    if not is_dns_name(value):
        raise ValueError(f"invalid host name {quoted(value)}: {DNS_NAME_RULE}")
    return value


def split_entry(text: str) -> tuple[str, str]:
    """"NAME=ADDRESS" or "NAME:ADDRESS" as (name, address): cut at the first separator, `=`
    tried first ("db:::1" is db at ::1, as is "db=::1")."""
    for separator in SEPARATORS:
        name, found, address = text.partition(separator)
        if found:
            return name, address
    raise ValueError(f"expected {EXTRA_HOST_TEXT}, got {quoted(text)}: no address")


def unbracketed(address: str) -> str:
    return address[1:-1] if len(address) > 2 and address[0] == "[" and address[-1] == "]" else address


def to_extra_host(value: object) -> object:
    """A string entry as the mapping form; the model checks the name and the address."""
    if isinstance(value, str):
        host, address = split_entry(value)
        return {"host": host, "ip": address}
    return reject_scalar(value, EXTRA_HOST_FORMS)


def to_host_address(value: object) -> IPv4Address | IPv6Address | str:
    """An IPv4 or IPv6 address, bare or in brackets ("[::1]"; without a zone, as Docker's
    --add-host), or `host-gateway`."""
    if value == HOST_GATEWAY:
        return value
    return to_ip_address(value, f" or {HOST_GATEWAY}")


def to_ip_address(value: object, or_else: str = "") -> IPv4Address | IPv6Address:
    """An IPv4 or IPv6 address, bare or in brackets, without a zone (a container's interfaces
    are not the host's). `or_else`: what else the field takes, for the error."""
    if isinstance(value, (IPv4Address, IPv6Address)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address{or_else}, got {describe_value(value)}{quote_hint(value)}")
    try:
        address = ip_address(unbracketed(value))
    except ValueError:
        raise ValueError(f"expected an IP address (10.0.0.5, fd00::5){or_else}, got {quoted(value)}") from None
    if isinstance(address, IPv6Address):
        unzoned(address, "an IP address", value)
    return address


@dataclass(frozen=True)
class AliasClash:
    """An alias of `container` on `network` (its `index` there) that already names `owner`."""

    container: str
    network: str
    index: int
    alias: str
    owner: str


def alias_clashes(members: Iterable[tuple[str, str, Mapping[str, Sequence[str]]]]) -> Iterator[AliasClash]:
    """Of (container key, hostname, its aliases by network), the aliases that name another
    container: its key or hostname (on any network: a container sharing a network with each
    would find the name twice), or its alias on the same network, first come first named.
    Names compare as resolvers compare them, without case; a container's own key or hostname,
    and one alias on two networks (each its own container's), are no clash."""
    listed = list(members)
    names: dict[str, str] = {}
    for key, hostname, _ in listed:
        names.setdefault(key.lower(), key)
        names.setdefault(hostname.lower(), key)
    aliases: dict[tuple[str, str], str] = {}  # (network, alias) -> the container it names
    for key, _, networks in listed:
        for network, its_aliases in networks.items():
            for index, alias in enumerate(its_aliases):
                owner = names.get(alias.lower()) or aliases.setdefault((network, alias.lower()), key)
                if owner != key:
                    yield AliasClash(key, network, index, alias, owner)
