"""A shared disk over sshfs, as a lab would set it up: worker hosts (network namespaces) mount the
main's folder at the same path, each in its own mount namespace (tests/sshfs_lab.py). What holds
across such mounts and what does not: visibility, atomic rename, O_EXCL, flock, imgdist's claims.
Root only; CI runs these as root."""

from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from imgdist.engine import file_digest

from .conftest import REPO, read_line
from .netns import namespaces_usable
from .sshfs_lab import DEFAULT_CACHE, PYTHON, SharedDiskLab, binaries_missing, mounts_under

REASON = namespaces_usable() or (
    f"sshfs lab needs {binaries_missing()} (apt-get install sshfs openssh-server openssh-client)"
    if binaries_missing()
    else ""
)
pytestmark = [
    pytest.mark.netns,
    pytest.mark.integration,
    pytest.mark.skipif(bool(REASON), reason=REASON),
]
WORKERS = ["h1", "h2"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with SharedDiskLab(WORKERS, parent=tmp_path_factory.mktemp("sshfs-lab")) as shared:
        yield shared


@pytest.fixture
def folder(lab, request):
    """A fresh folder of the share for one test."""
    path = lab.share / request.node.name
    path.mkdir()
    return path


def wait_for(condition, *, timeout_s: float, what: str, lab: SharedDiskLab) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s\n{lab.read_logs()}"
        time.sleep(0.005)


def on_both(
    lab: SharedDiskLab, folder: Path, code: str, *args: str, signal: str, action=None
) -> list:
    """Run `code` in h1 and h2 at once; each writes `ready-<host>` into `folder` and waits for
    the file `signal` there; once both are ready the main runs `action`, then releases both
    together; their JSON outputs are returned. (The workers' waits are bounded too: 30 s.)"""
    started = [
        lab.popen(
            host,
            [PYTHON, "-c", code, str(folder), host, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in WORKERS
    ]
    wait_for(
        lambda: (
            all((folder / f"ready-{host}").exists() for host in WORKERS)
            or any(p.poll() is not None for p in started)
        ),
        timeout_s=30,
        what="both workers ready",
        lab=lab,
    )
    if action:
        action()
    start = folder / f".{signal}.part"  # written whole, then renamed: read whole or not at all
    start.write_text(repr(time.time() + 0.3))
    start.replace(folder / signal)
    outputs = []
    for process in started:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outputs


# The signal file holds a start time shortly ahead, so that both workers start together (within
# a millisecond) whatever each one's delay in noticing the file.
WAIT_FOR_SIGNAL = """
def wait_for_signal(name):
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(folder, name)):
        assert time.time() < deadline, name + " never came"
        time.sleep(0.001)  # two cores: do not starve the other worker
    with open(os.path.join(folder, name)) as signal:
        start = float(signal.read())
    time.sleep(max(0.0, start - time.time() - 0.002))
    while time.time() < start:
        pass
"""


def test_share_mounted_only_in_the_worker(lab):
    """The sshfs mount exists in the worker command's mount namespace only: not on this machine,
    not in another worker's command; each command has its own connection to the main."""
    started = time.monotonic()
    plain = lab.run("h1", ["true"], timeout=30, mount=False)
    plain_s = time.monotonic() - started
    started = time.monotonic()
    mounted = lab.run("h1", ["true"], timeout=30)
    mounted_s = time.monotonic() - started
    assert plain.returncode == 0, plain.stderr
    assert mounted.returncode == 0, mounted.stderr
    code = "import json; print(json.dumps(open('/proc/self/mountinfo').read()), flush=True)"
    holder = lab.popen(  # holds its mount until its stdin closes
        "h1",
        [PYTHON, "-c", code + "; import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    h1_mounts = json.loads(read_line(holder, timeout_s=30))
    h1_sshfs = [m for m in h1_mounts.splitlines() if f" {lab.share} " in m and "fuse.sshfs" in m]
    assert len(h1_sshfs) == 1, h1_mounts
    assert f"root@{lab.address}:{lab.share}" in h1_sshfs[0]
    assert mounts_under(lab.base) == []  # this machine sees no mount while h1 holds one
    h2_plain = lab.python("h2", code, mount=False)
    assert str(lab.share) not in json.loads(h2_plain.stdout)
    h2_own = json.loads(lab.python("h2", code).stdout)
    h2_sshfs = [m for m in h2_own.splitlines() if f" {lab.share} " in m]
    assert len(h2_sshfs) == 1
    assert h2_sshfs[0].split()[2] != h1_sshfs[0].split()[2]  # another mount (device)
    holder.communicate("", timeout=30)
    print(f"worker command: {plain_s * 1000:.0f} ms plain, {mounted_s * 1000:.0f} ms with sshfs")


def test_workers_see_what_the_main_wrote(lab, folder):
    """A file the main writes into the share is at the same absolute path, with the same bytes,
    in both workers (each on its own host name)."""
    photo = folder / "photos" / "p0.jpg"
    photo.parent.mkdir()
    data = os.urandom(300_000)
    photo.write_bytes(data)
    code = (
        "import hashlib, json, os, socket, sys; p = sys.argv[1]; b = open(p, 'rb').read();"
        "print(json.dumps([socket.gethostname(), os.path.realpath(p), len(b),"
        " hashlib.sha256(b).hexdigest()]))"
    )
    for host in WORKERS:
        done = lab.python(host, code, str(photo))
        assert done.returncode == 0, done.stderr
        name, path, size, digest = json.loads(done.stdout)
        assert name == f"{host}host"
        assert (path, size, digest) == (str(photo), len(data), hashlib.sha256(data).hexdigest())


def test_replace_by_a_worker_is_seen_promptly(lab, folder):
    """h1 replaces an existing file (tmp file + os.replace): the main and h2 (which had read the
    old bytes) see the new bytes within milliseconds, never a mix of old and new."""
    target = folder / "result.bin"
    old, new = b"old" * 1000, b"new, and longer" * 1000  # a size change shows stale attributes
    target.write_bytes(old)
    watcher = lab.popen(
        "h2",
        [
            PYTHON,
            "-c",
            """
import json, os, sys, time
target, ready, old, new = sys.argv[1], sys.argv[2], sys.argv[3].encode(), sys.argv[4].encode()
assert open(target, "rb").read() == old
open(ready, "w").close()
seen, deadline = {}, time.time() + 30
while time.time() < deadline:
    with open(target, "rb") as handle:
        data = handle.read()
    seen.setdefault(data, time.time())
    if data == new:
        break
print(json.dumps({"new": seen.get(new), "others": [d == old for d in seen if d != new]}))
""",
            str(target),
            str(folder / "ready"),
            old.decode(),
            new.decode(),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_for((folder / "ready").exists, timeout_s=30, what="h2 read the old bytes", lab=lab)
    replace = (
        "import os, sys, time; target, data = sys.argv[1], sys.argv[2].encode()\n"
        "with open(target + '.part', 'xb') as handle: handle.write(data)\n"
        "os.replace(target + '.part', target); print(time.time())"
    )
    done = lab.python("h1", replace, str(target), new.decode())
    assert done.returncode == 0, done.stderr
    replaced_at = float(done.stdout)
    wait_for(lambda: target.read_bytes() == new, timeout_s=5, what="main sees it", lab=lab)
    main_s = time.time() - replaced_at  # an upper bound: includes h1's exit
    stdout, _ = watcher.communicate(timeout=60)
    seen = json.loads(stdout)
    assert seen["new"] is not None, "h2 never saw the new bytes"
    assert seen["others"] == [True]  # only ever the old bytes before: no torn or stale mix
    h2_s = seen["new"] - replaced_at
    assert h2_s < 2
    assert not (folder / "result.bin.part").exists()
    print(f"replace visible: h2 after {h2_s * 1000:.1f} ms, main within {main_s * 1000:.0f} ms")


def test_o_excl_is_atomic_across_mounts(lab, folder):
    """Both workers race to create the same 100 names with O_CREAT|O_EXCL, in step:
    each name is created by exactly one; the loser gets EEXIST, or EPERM when both lookups
    missed and the server refused the second create (SFTP v3 has no 'exists' status: OpenSSH
    answers its generic failure, which sshfs turns into EPERM)."""
    code = (
        "import errno, json, os, sys, time\nfolder, me, count = sys.argv[1], sys.argv[2],"
        " int(sys.argv[3])\n"
        + WAIT_FOR_SIGNAL
        + """
open(os.path.join(folder, "ready-" + me), "w").close()
wait_for_signal("go")
won, lost = [], {}
for i in range(count):  # the same order: both go for each name at about the same time
    try:
        fd = os.open(os.path.join(folder, f"name-{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except OSError as exc:
        lost[errno.errorcode[exc.errno]] = lost.get(errno.errorcode[exc.errno], 0) + 1
        continue
    os.write(fd, me.encode())
    os.close(fd)
    won.append(i)
print(json.dumps({"won": won, "lost": lost}))
"""
    )
    first, second = on_both(lab, folder, code, "100", signal="go")
    assert set(first["won"]).isdisjoint(second["won"])
    assert sorted(first["won"] + second["won"]) == list(range(100))
    for host, outcome in zip(WORKERS, (first, second), strict=True):
        assert set(outcome["lost"]) <= {"EEXIST", "EPERM"}, outcome["lost"]
        assert all((folder / f"name-{i}").read_text() == host for i in outcome["won"])
    losers = collections.Counter(first["lost"]) + collections.Counter(second["lost"])
    print(f"O_EXCL race: h1 won {len(first['won'])}, h2 {len(second['won'])}; losers {losers}")


def test_imgdist_write_new_is_atomic_across_mounts(lab, folder):
    """imgdist's files.write_new (the create-if-absent behind its folder lock: a hard link over
    SFTP's hardlink@openssh.com) from both workers in step on the same 100 names: each name is
    won by exactly one, and neither gets an error."""
    code = (
        "import errno, json, os, sys, time\nfrom pathlib import Path\n"
        "from imgdist.files import write_new\n"
        "folder, me, count = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        + WAIT_FOR_SIGNAL
        + """
open(os.path.join(folder, "ready-" + me), "w").close()
wait_for_signal("go")
won = [i for i in range(count) if write_new(Path(folder) / f"lock-{i}", me.encode())]
print(json.dumps(won))
"""
    )
    first, second = on_both(lab, folder, code, "100", signal="go")
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == list(range(100))
    assert all((folder / f"lock-{i}").read_text() == "h1" for i in first)
    print(f"write_new race: h1 won {len(first)}, h2 {len(second)}")


def test_flock_is_not_shared_across_mounts(lab, folder):
    """flock (and fcntl) locks are NOT shared over sshfs: SFTP has no locking and sshfs no lock
    operation, so the kernel keeps each lock for its own mount only; both workers and the main
    get LOCK_EX|LOCK_NB on the same file at the same time (a second flock within one mount still
    conflicts). imgdist must not rely on flock on such a disk."""
    (folder / "lockfile").write_bytes(b"\0" * 8)
    code = (
        "import fcntl, json, os, sys, time\nfolder, me = sys.argv[1], sys.argv[2]\n"
        + WAIT_FOR_SIGNAL
        + """
path, got = os.path.join(folder, "lockfile"), {}
def take(kind, lock):
    handle = open(path, "r+b")
    try:
        lock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        got[kind] = True
    except BlockingIOError:
        got[kind] = False
    return handle
held = [take("flock", fcntl.flock), take("lockf", fcntl.lockf), take("flock again", fcntl.flock)]
open(os.path.join(folder, "ready-" + me), "w").close()  # holding the locks until released
wait_for_signal("release")
print(json.dumps(got))
"""
    )
    with (folder / "lockfile").open("r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the main holds it first, locally
        first, second = on_both(lab, folder, code, signal="release")
    expected = {"flock": True, "lockf": True, "flock again": False}
    assert first == expected
    assert second == expected


LIST_TWICE = (
    "import json, os, sys, time\nfolder, me = sys.argv[1], sys.argv[2]\n"
    + WAIT_FOR_SIGNAL
    + """
data = os.path.join(folder, "data")
before = sorted(os.listdir(data))
open(os.path.join(folder, "ready-" + me), "w").close()
wait_for_signal("created")
print(json.dumps([before, sorted(os.listdir(data)), os.path.exists(os.path.join(data, "new"))]))
"""
)


def test_listing_is_fresh_only_without_sshfs_caches(lab, folder, tmp_path):
    """A file the main creates shows in a worker's next listing with the lab's options (FRESH);
    with sshfs's defaults the listing is cached (dir_cache, 20 s) and misses it, though the name
    itself is found: why the lab mounts with dir_cache=no."""

    def listings(lab: SharedDiskLab, folder: Path) -> list:
        (folder / "data").mkdir()
        create = (folder / "data" / "new").touch
        return on_both(lab, folder, LIST_TWICE, signal="created", action=create)

    assert listings(lab, folder) == [[[], ["new"], True]] * 2
    with SharedDiskLab(WORKERS, cache=DEFAULT_CACHE, parent=tmp_path) as cached:
        assert listings(cached, cached.share) == [[[], [], True]] * 2


def test_imgdist_claims_are_exact_over_sshfs(lab, folder):
    """Two workers claim 300 chunks with imgdist.engine_claims.claim (a file created exclusively per
    chunk), as the `path` transport's engines do: over sshfs every chunk is taken exactly once.
    (The counter under flock it replaced gave 143-300 of 300 positions to both workers here.)"""
    (folder / "claims").mkdir()
    code = (
        "import json, os, sys, time\nfrom imgdist.engine_claims import claim\n"
        "folder, me, count = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        + WAIT_FOR_SIGNAL
        + """
open(os.path.join(folder, "ready-" + me), "w").close()
wait_for_signal("go")
taken = [n for n in range(count) if claim(os.path.join(folder, "claims"), n, me)]
print(json.dumps(taken))
"""
    )
    first, second = on_both(lab, folder, code, "300", signal="go")
    assert sorted(first + second) == list(range(300))  # each once: none twice, none lost
    assert first  # both really raced for them
    assert second
    owners = {int(p.name): p.read_text() for p in (folder / "claims").iterdir()}
    assert sorted(owners) == list(range(300))


def test_private_folder_hidden_from_workers(lab):
    """The main's private folder (outside the share) is covered in the workers: its files cannot
    be read there, while the share still can."""
    secret = lab.private / "secret.txt"
    secret.write_text("main only")
    (lab.share / "public.txt").write_text("for all")
    code = (
        "import json, os, sys\nsecret, public = sys.argv[1], sys.argv[2]\n"
        "try:\n    read = open(secret).read()\nexcept FileNotFoundError:\n    read = None\n"
        "print(json.dumps([read, os.listdir(os.path.dirname(secret)), open(public).read()]))"
    )
    for host in WORKERS:
        done = lab.python(host, code, str(secret), str(lab.share / "public.txt"))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [None, [], "for all"]
    assert secret.read_text() == "main only"  # untouched on the main


def test_imgdist_runs_in_a_worker_host(lab, folder):
    """The project's Python in a worker host imports imgdist (from this work tree) and reads the
    shared file; imgdist's own shared-disk check (engine.check_shared) passes there for the
    share, and names what is wrong for the main's private folder: engines can run there."""
    token_file = folder / ".imgdist-probe-token-1234"
    token_file.write_text("token-1234")
    shared = folder / "photo.bin"
    shared.write_bytes(b"same bytes on every host")
    secret = lab.private / "photo.bin"
    secret.write_bytes(b"the main's own")
    code = (
        "import json, os, socket, sys, imgdist\nfrom imgdist.engine import check_shared, file_digest\n"
        "folder, shared, secret, size, digest = sys.argv[1:6]\n"
        "print(json.dumps([imgdist.__file__, socket.gethostname(),"
        " check_shared([(shared, int(size), digest)], folder, 'token-1234'),"
        " check_shared([(secret, int(size), digest)], folder, 'token-1234')]))"
    )
    size, digest = str(shared.stat().st_size), file_digest(str(shared))
    done = lab.python("h2", code, str(folder), str(shared), str(secret), size, digest)
    assert done.returncode == 0, done.stderr
    module, hostname, fine, problems = json.loads(done.stdout)
    assert Path(module).is_relative_to(REPO / "src")
    assert (hostname, fine) == ("h2host", [])
    assert problems == [f"{secret} cannot be read here (No such file or directory)"]


def test_lab_leaves_nothing_behind(tmp_path):
    """After a lab closes (with a worker still holding a mount) its namespaces, processes,
    mounts and folder are gone."""
    with SharedDiskLab(["w1"], parent=tmp_path) as small:
        holder = small.popen("w1", ["sleep", "300"])
        wait_for(
            lambda: any(
                f" {small.share} " in line
                for line in Path(f"/proc/{holder.pid}/mountinfo").read_text().splitlines()
            ),
            timeout_s=30,
            what="w1's mount",
            lab=small,
        )
        names = [small.net.ns(h) for h in small.net.names] + [small.net.switch]
        base = small.base
    assert not base.exists()
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False
    )
    assert not set(names) & {line.split()[0] for line in listed.stdout.splitlines() if line}
    assert mounts_under(base) == []
    wait_for(  # killed processes may take a moment to exit
        lambda: not [p for p in Path("/proc").glob("[0-9]*") if str(base) in cmdline(p)],
        timeout_s=10,
        what="the lab's processes gone",
        lab=small,
    )


def cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
