"""Who the function runs as, as libraries ask it: getpass.getuser, pwd and grp lookups by
id and by name, os.getgroups, the home directory through expanduser, umask, file ownership
of what it creates, and lookups of names that do not exist. Only what must agree with the
ids themselves is returned, not the ids, which differ between a host and a USF."""

import getpass
import grp
import os
import pwd
import tempfile


def handler(event, context):
    uid, gid = os.getuid(), os.getgid()
    me = pwd.getpwuid(uid)
    group = grp.getgrgid(gid)
    user = getpass.getuser()
    try:
        pwd.getpwnam(event["missing_user"])
        missing_user = "found"
    except KeyError:
        missing_user = "KeyError"
    try:
        grp.getgrgid(event["missing_gid"])
        missing_gid = "found"
    except KeyError:
        missing_gid = "KeyError"
    old = os.umask(0o027)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "made")
        with open(path, "w"):
            pass
        st = os.stat(path)
    os.umask(old)
    return {"pw_uid_matches": me.pw_uid == uid, "pw_gid_matches": me.pw_gid == gid,
            "getpwnam_roundtrip": pwd.getpwnam(me.pw_name).pw_uid == uid,
            "getuser_is_pw_name": user == me.pw_name, "group_roundtrip":
            grp.getgrnam(group.gr_name).gr_gid == gid, "in_all_users": any(
                p.pw_uid == uid for p in pwd.getpwall()),
            "groups_include_gid": gid in os.getgroups() or os.getgroups() == [],
            "home": os.path.expanduser("~") == (os.environ.get("HOME") or me.pw_dir),
            "owner": (st.st_uid == os.geteuid(), st.st_gid == os.getegid()),
            "umask_mode": oct(st.st_mode & 0o777), "old_umask_restored": os.umask(old) == old,
            "missing_user": missing_user, "missing_gid": missing_gid,
            "effective": (os.geteuid() == uid, os.getegid() == gid),
            "resuid": os.getresuid() == (uid, uid, uid), "shell_set": bool(me.pw_shell)}
