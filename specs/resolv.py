"""A container's resolver settings beyond the host's: Docker's `--dns`, `--dns-search` and
`--dns-option` (Compose's `dns`, `dns_search`, `dns_opt`), each a string or a list."""

from __future__ import annotations

from specs.errors import quoted
from specs.fields import SubfieldError, to_tuple
from specs.hosts import DNS_NAME_RULE, is_dns_name

NO_SEARCH = "."
"""`dns_search: "."`: no search domain at all, not the host's (as Docker's `--dns-search=.`)."""


def to_items(value: object) -> object:
    """One string as the only item, as Compose takes `dns: 8.8.8.8`; a list as a tuple
    (fields.to_tuple); the model checks the rest."""
    return (value,) if isinstance(value, str) else to_tuple(value)


def check_search_domains(domains: tuple[str, ...]) -> tuple[str, ...]:
    for index, domain in enumerate(domains):
        if domain == NO_SEARCH and len(domains) > 1:
            raise SubfieldError((index,), f"{quoted(NO_SEARCH)} means no search domain: it goes alone")
        if domain != NO_SEARCH and not is_dns_name(domain.removesuffix(".")):
            raise SubfieldError((index,), f"invalid search domain {quoted(domain)}: {DNS_NAME_RULE}")
    return domains


def check_resolver_option(option: str) -> str:
    """One word of resolv.conf's `options` line (`ndots:2`, `edns0`): a blank or a `#` would
    make it two options, or a comment; a control character (a NUL) no option."""
    if not option or not option.isprintable() or any(c.isspace() or c == "#" for c in option):
        raise ValueError(f"invalid resolver option {quoted(option)}: one word, like ndots:2 or edns0")
    return option
