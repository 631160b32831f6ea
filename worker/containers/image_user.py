"""The image's USER resolved as the container's init would: uid, primary gid, supplementary groups, HOME.

Grand-challenge runs the program as the image's USER with that user's groups and HOME (so packages a
Dockerfile installed with `pip install --user` into ~/.local are found). Rules, as docker and podman apply
them to the image's own /etc/passwd and /etc/group:
- USER is `name`, `uid`, `name:group` or `uid:gid` (group by name or id);
- a name must be in /etc/passwd; a numeric uid need not be (then HOME is /tmp and the gid is the uid's);
- the primary gid is the group part, else the passwd entry's gid; supplementary groups are the /etc/group
  entries that list the user name;
- group 0 is never given (the sandbox refuses it; inside the user namespace it would be harmless, but
  nothing in the references needs it): a primary gid 0 becomes the uid, as this runner always did;
- a user that resolves to uid 0 is refused, whatever its name.
Errors are UserResolutionError (a ValueError) with one participant line.

Imports the stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass

# HOME is made writable with a tmpfs; these paths are the sandbox's own or would hide the whole image.
_NO_HOME_TMPFS = {"/", "/tmp", "/input", "/output", "/proc", "/dev", "/sys", "/etc", "/usr", "/bin", "/lib"}


class UserResolutionError(ValueError):
    """The image's USER cannot be resolved to a non-root user; the message is one participant line."""


@dataclass(frozen=True)
class ImageUser:
    """Who the container's program runs as, inside its user namespace."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    name: str | None = None

    @property
    def writable_home(self) -> str | None:
        """The HOME that gets a size-limited writable tmpfs (a copy of the image's), or None."""
        home = self.home.rstrip("/") or "/"
        if home in _NO_HOME_TMPFS or home.startswith(("/proc/", "/dev/", "/sys/", "/opt/ml/")):
            return None
        return home


def parse_passwd(text: str) -> dict[str, tuple[int, int, str]]:
    """name -> (uid, gid, home) from /etc/passwd text; malformed lines are skipped, as libc does."""
    users: dict[str, tuple[int, int, str]] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[2].isdigit() and fields[3].isdigit() and fields[0] not in users:
            users[fields[0]] = (int(fields[2]), int(fields[3]), fields[5] or "/")
    return users


def parse_group(text: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    """name -> (gid, member names) from /etc/group text."""
    groups: dict[str, tuple[int, tuple[str, ...]]] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit() and fields[0] not in groups:
            groups[fields[0]] = (int(fields[2]), tuple(m for m in fields[3].split(",") if m))
    return groups


def resolve_user(user: str, passwd: str | None, group: str | None) -> ImageUser:
    """Resolve USER against the image's /etc/passwd and /etc/group text (None: the file is absent)."""
    users = parse_passwd(passwd or "")
    groups = parse_group(group or "")
    user_part, _, group_part = user.strip().partition(":")
    name: str | None = None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next(((n, e) for n, e in users.items() if e[0] == uid), None)
        if entry is not None:
            name = entry[0]
        gid, home = (entry[1][1], entry[1][2]) if entry else (uid, "/tmp")
    else:
        if user_part not in users:
            where = "the image has no /etc/passwd" if passwd is None else "it is not in the image's /etc/passwd"
            raise UserResolutionError(
                f"the image's USER {user_part!r} cannot be resolved: {where}; create it in the Dockerfile "
                "(e.g. RUN useradd -m -r user) or give a numeric USER such as 1000:1000"
            )
        name = user_part
        uid, gid, home = users[user_part]
    if uid == 0:
        raise UserResolutionError(f"the image's USER {user!r} is root (uid 0); set a non-root USER")
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        elif group_part in groups:
            gid = groups[group_part][0]
        else:
            raise UserResolutionError(
                f"the image's USER group {group_part!r} is not in the image's /etc/group; use a numeric gid"
            )
    if gid == 0:
        gid = uid
    extra = sorted({g for g, members in groups.values() if name is not None and name in members} - {0, gid})
    return ImageUser(uid=uid, gid=gid, groups=tuple(extra), home=home, name=name)
