"""GitRepository `spec.verify` (reconciler.verify) against real signed commits and tags.

The keys are made here (`gpg --quick-gen-key` with no passphrase in a GNUPGHOME of the test's
own, `ssh-keygen -t ed25519`), the commits and tags are signed by git itself (`commit -S`,
`tag -s`, with `gpg.format=ssh` for SSH), and verification reads them from a bare clone, as it
reads Herald's cache. Objects git would never sign are made with `git hash-object -w`: a signed
commit with its message changed, a signature in the wrong namespace, two signatures in one.
gpg and ssh-keygen come from Debian (`gnupg`, `openssh-client`); when they cannot be
installed, the tests fail with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from herald.model import GitRef
from reconciler import verify
from reconciler.verify import VerificationError, check_mode, verify_commit, verify_tag
from tests.apt import apt_install


def _tools_missing() -> str:
    why = apt_install(["gnupg"], lambda: all(shutil.which(t) for t in ("gpg", "gpg-agent", "gpgconf")))
    return why or apt_install(["openssh-client"], lambda: shutil.which("ssh-keygen") is not None,
                              recommends=False)


@dataclass
class Pgp:
    name: str
    keyid: str  # the primary key's, as Flux reports it
    fingerprint: str
    armored: str


@dataclass
class Ssh:
    private: Path
    public: str
    fingerprint: str


@dataclass
class World:
    root: Path
    env: dict[str, str]
    gnupghome: Path
    cache: Path  # the bare clone verification reads
    pgp: dict[str, Pgp] = field(default_factory=dict)
    ssh: dict[str, Ssh] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # name -> what refs/tags/<name> points at

    def git(self, *args: str, cwd: Path | None = None, input: bytes | None = None) -> bytes:
        done = subprocess.run(["git", *args], cwd=cwd or self.root / "work", env=self.env, input=input,
                              capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr.decode()}"
        return done.stdout

    def gpg(self, *args: str, input: bytes | None = None) -> bytes:
        done = subprocess.run(["gpg", "--batch", "--no-tty", *args], env=self.env, input=input,
                              capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, f"gpg {' '.join(args)}: {done.stderr.decode()}"
        return done.stdout

    def raw(self, sha: str) -> bytes:
        kind = self.git("cat-file", "-t", sha, cwd=self.cache).strip().decode()
        return self.git("cat-file", kind, sha, cwd=self.cache)

    def write(self, kind: str, raw: bytes, repo: Path | None = None) -> str:
        """A new object in the cache (or `repo`), as given: `git hash-object -w`."""
        return self.git("hash-object", "-t", kind, "-w", "--stdin", cwd=repo or self.cache,
                        input=raw).strip().decode()

    def signed_commit(self, payload: bytes, signature: bytes) -> str:
        """The unsigned commit `payload` with `signature` in a gpgsig header, where git puts it."""
        head, _, message = payload.partition(b"\n\n")
        header = b"gpgsig " + b"\n ".join(signature.rstrip(b"\n").split(b"\n")) + b"\n"
        return self.write("commit", head + b"\n" + header + b"\n" + message)


def _gen_pgp(w: World, name: str, *, algo: str = "ed25519", usage: str = "sign", expire: str = "never",
             faked_time: str = "") -> Pgp:
    uid = f"{name.title()} <{name}@example.test>"
    faked = [f"--faked-system-time={faked_time}"] if faked_time else []
    w.gpg(*faked, "--passphrase", "", "--quick-gen-key", uid, algo, usage, expire)
    colons = w.gpg("--with-colons", "--list-keys", f"<{name}@example.test>").decode().splitlines()
    pub = next(ln.split(":") for ln in colons if ln.startswith("pub:"))
    fpr = next(ln.split(":")[9] for ln in colons if ln.startswith("fpr:"))
    armored = w.gpg("--armor", "--export", fpr).decode()
    return Pgp(name, pub[4], fpr, armored)


def _gen_ssh(w: World, name: str) -> Ssh:
    key = w.root / f"{name}_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@example.test", "-f", str(key)],
                   check=True, capture_output=True, timeout=60)
    public = key.with_suffix(".pub").read_text().strip()
    listed = subprocess.run(["ssh-keygen", "-lf", str(key.with_suffix(".pub"))], check=True, capture_output=True,
                            text=True, timeout=60).stdout.split()
    return Ssh(key, public, listed[1])


def _commit(w: World, label: str, *sign: str, repo: Path | None = None, path: str = "file") -> str:
    work = repo or w.root / "work"
    (work / path).write_text(f"{label}\n")
    w.git("add", path, cwd=work)
    w.git(*sign, "commit", "-q", *(["-S"] if sign else []), "-m", f"{label}\n\nbody of {label}", cwd=work)
    return w.git("rev-parse", "HEAD", cwd=work).strip().decode()


def _pgp_signing(key: Pgp | str) -> list[str]:
    return ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={key.fingerprint if isinstance(key, Pgp) else key}"]


def _ssh_signing(key: Ssh) -> list[str]:
    return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}.pub"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    why = _tools_missing()
    if why:
        pytest.fail(f"gpg and ssh-keygen are needed to verify signatures: {why}")
    root = tmp_path_factory.mktemp("verify")
    gnupghome = root / "gnupg"
    gnupghome.mkdir(mode=0o700)
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(root), "LC_ALL": "C",
           "GNUPGHOME": str(gnupghome), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": "Alice", "GIT_AUTHOR_EMAIL": "alice@example.test",
           "GIT_COMMITTER_NAME": "Alice", "GIT_COMMITTER_EMAIL": "alice@example.test"}
    w = World(root, env, gnupghome, root / "cache.git")
    try:
        yield _build(w)
    finally:
        # The signing agent git started in our GNUPGHOME, and only that one.
        subprocess.run(["gpgconf", "--homedir", str(gnupghome), "--kill", "all"], env=env, capture_output=True,
                       timeout=60, check=False)


def _build(w: World) -> World:
    for name in ("alice", "mallory"):
        w.pgp[name] = _gen_pgp(w, name)
    # Carol's primary key only certifies; a subkey signs. Flux reports the primary key's ID.
    carol = _gen_pgp(w, "carol", usage="cert")
    w.gpg("--passphrase", "", "--quick-add-key", carol.fingerprint, "ed25519", "sign", "never")
    carol.armored = w.gpg("--armor", "--export", carol.fingerprint).decode()
    w.pgp["carol"] = carol
    # Dave's key was made 30 days ago and expired 28 days ago.
    month_ago = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() - 30 * 86400))
    w.pgp["dave"] = _gen_pgp(w, "dave", expire="2d", faked_time=month_ago + "!")
    for name in ("bob", "eve"):
        w.ssh[name] = _gen_ssh(w, name)

    work = w.root / "work"
    w.git("init", "-q", "-b", "main", str(work), cwd=w.root)
    c = w.commits
    c["alice"] = _commit(w, "alice", *_pgp_signing(w.pgp["alice"]))
    c["unsigned"] = _commit(w, "unsigned")
    c["mallory"] = _commit(w, "mallory", *_pgp_signing(w.pgp["mallory"]))
    c["carol"] = _commit(w, "carol", *_pgp_signing(w.pgp["carol"]))
    c["bob"] = _commit(w, "bob", *_ssh_signing(w.ssh["bob"]))
    c["eve"] = _commit(w, "eve", *_ssh_signing(w.ssh["eve"]))
    w.git(*_pgp_signing(w.pgp["alice"]), "tag", "-s", "v1.0.0", "-m", "release 1.0.0", c["alice"])
    w.git(*_ssh_signing(w.ssh["bob"]), "tag", "-s", "v1.1.0", "-m", "release 1.1.0", c["bob"])
    w.git(*_pgp_signing(w.pgp["mallory"]), "tag", "-s", "v6.6.6", "-m", "not a release", c["mallory"])
    w.git("tag", "-a", "v0.9.0", "-m", "annotated, unsigned", c["unsigned"])
    w.git("tag", "lightweight", c["alice"])
    # A signed merge of a signed tag: the commit carries a `mergetag` header, part of what is signed.
    w.git("checkout", "-q", "-b", "side", c["unsigned"])
    _commit(w, "side", path="side-file")
    w.git(*_pgp_signing(w.pgp["alice"]), "tag", "-s", "side-1", "-m", "side release")
    w.git("checkout", "-q", "main")
    w.git(*_pgp_signing(w.pgp["alice"]), "merge", "-q", "--no-ff", "-S", "-m", "merge side-1", "side-1")
    c["merge"] = w.git("rev-parse", "HEAD").strip().decode()
    for tag in ("v1.0.0", "v1.1.0", "v6.6.6", "v0.9.0", "lightweight"):
        w.tags[tag] = w.git("rev-parse", f"refs/tags/{tag}").strip().decode()
    w.git("clone", "-q", "--bare", "--no-local", str(work), str(w.cache), cwd=w.root)
    return w


def _keys(w: World, *names: str) -> dict[str, str]:
    """A Secret's data: `<name>.asc` for OpenPGP keys, `<name>.sshpub` for SSH keys."""
    return {f"{n}.asc" if n in w.pgp else f"{n}.sshpub": w.pgp[n].armored if n in w.pgp else w.ssh[n].public
            for n in names}


def _fails(fn, *args, **kwargs) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        fn(*args, **kwargs)
    return caught.value


# ---- OpenPGP commits ------------------------------------------------------------------------

def test_a_good_signature_returns_the_key_id_flux_reports(world: World) -> None:
    alice = world.pgp["alice"]
    assert verify_commit(world.cache, world.commits["alice"], _keys(world, "alice")) == alice.keyid
    assert alice.keyid == alice.fingerprint[-16:] and alice.keyid.isupper()


def test_an_unsigned_commit_fails(world: World) -> None:
    sha = world.commits["unsigned"]
    e = _fails(verify_commit, world.cache, sha, _keys(world, "alice"))
    assert str(e) == (f"signature verification of commit '{sha}' failed: "
                      "unsupported signature type: empty (the commit is not signed)")
    assert e.reason == "InvalidCommitSignature" and not e.stalled


def test_a_commit_signed_by_a_key_not_in_the_secret_fails_naming_that_key(world: World) -> None:
    sha = world.commits["mallory"]
    e = _fails(verify_commit, world.cache, sha, _keys(world, "alice"))
    assert str(e) == (f"signature verification of commit '{sha}' failed: unable to verify Git commit: "
                      "unable to verify payload with any of the given key rings: no matching key "
                      f"(signed by unknown key {world.pgp['mallory'].keyid}, which is not in the Secret)")


@pytest.mark.parametrize("change", [(b"\nalice\n", b"\nALICE\n"), (b"author Alice", b"author Mallory")],
                         ids=["message", "author"])
def test_a_signed_commit_changed_after_signing_fails(world: World, change: tuple[bytes, bytes]) -> None:
    raw = world.raw(world.commits["alice"])
    assert change[0] in raw
    forged = world.write("commit", raw.replace(change[0], change[1], 1))
    e = _fails(verify_commit, world.cache, forged, _keys(world, "alice"))
    assert f"commit '{forged}' failed" in str(e)
    assert f"(BAD signature from key {world.pgp['alice'].keyid}: the commit is not what was signed)" in str(e)


def test_the_second_of_several_keys_can_match(world: World) -> None:
    keys = {"mallory.asc": world.pgp["mallory"].armored, "dave.asc": world.pgp["dave"].armored,
            "alice.asc": world.pgp["alice"].armored, "bob.sshpub": world.ssh["bob"].public}
    assert verify_commit(world.cache, world.commits["alice"], keys) == world.pgp["alice"].keyid
    # One Secret entry may hold several keys (a key ring), as `gpg --export --armor a b` writes it.
    ring = world.gpg("--armor", "--export", world.pgp["mallory"].fingerprint, world.pgp["alice"].fingerprint)
    assert verify_commit(world.cache, world.commits["alice"], {"team.asc": ring.decode()}) == world.pgp["alice"].keyid


def test_a_subkey_signature_reports_the_primary_key_id(world: World) -> None:
    carol = world.pgp["carol"]
    assert verify_commit(world.cache, world.commits["carol"], _keys(world, "carol")) == carol.keyid


def test_entries_without_a_suffix_are_key_rings_as_in_flux(world: World) -> None:
    assert verify_commit(world.cache, world.commits["alice"],
                         {"author1": world.pgp["alice"].armored}) == world.pgp["alice"].keyid


def test_unreadable_key_rings_are_skipped_unless_none_can_be_read(world: World) -> None:
    sha = world.commits["alice"]
    keys = {"broken.asc": "not a key", "alice.asc": world.pgp["alice"].armored}
    assert verify_commit(world.cache, sha, keys) == world.pgp["alice"].keyid
    e = _fails(verify_commit, world.cache, sha, {"broken.asc": "not a key"})
    assert str(e).startswith(f"signature verification of commit '{sha}' failed: unable to verify Git commit: "
                             "unable to read armored key ring: broken.asc: ")


def test_a_pgp_signature_with_only_ssh_keys_fails_as_in_flux(world: World) -> None:
    sha = world.commits["alice"]
    e = _fails(verify_commit, world.cache, sha, _keys(world, "bob"))
    assert str(e) == (f"signature verification of commit '{sha}' failed: PGP signature detected but no PGP "
                      "public keys found in secret (keys with .asc suffix)")


def test_the_users_own_keyring_is_never_consulted(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # The signer's GNUPGHOME, which holds Alice's key, is the environment's: it must not count.
    monkeypatch.setenv("GNUPGHOME", str(world.gnupghome))
    e = _fails(verify_commit, world.cache, world.commits["alice"], _keys(world, "mallory"))
    assert f"signed by unknown key {world.pgp['alice'].keyid}" in str(e)


def test_the_throwaway_gnupghome_is_removed(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    verify_commit(world.cache, world.commits["alice"], _keys(world, "alice"))
    _fails(verify_commit, world.cache, world.commits["mallory"], _keys(world, "alice"))
    verify_commit(world.cache, world.commits["bob"], _keys(world, "bob"))
    assert list(tmp_path.iterdir()) == []


def test_a_signature_by_an_expired_key_fails(world: World) -> None:
    dave = world.pgp["dave"]
    payload = world.raw(world.commits["unsigned"]).replace(b"unsigned", b"dave")
    then = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() - 29 * 86400))
    signature = world.gpg(f"--faked-system-time={then}!", "--armor", "--detach-sign", "-u", dave.fingerprint,
                          input=payload)
    sha = world.signed_commit(payload, signature)
    e = _fails(verify_commit, world.cache, sha, _keys(world, "dave"))
    assert f"(signed by key {dave.keyid}, which has expired)" in str(e)


def test_two_signatures_in_one_are_refused_as_git_refuses_them(world: World) -> None:
    payload = world.raw(world.commits["unsigned"])
    signature = world.gpg("--armor", "--detach-sign", "-u", world.pgp["alice"].fingerprint,
                          "-u", world.pgp["mallory"].fingerprint, input=payload)
    sha = world.signed_commit(payload, signature)
    e = _fails(verify_commit, world.cache, sha, _keys(world, "alice", "mallory"))
    assert "the signature holds 2 signatures; git accepts exactly one" in str(e)


def test_a_signature_carrying_its_own_data_is_no_detached_signature(world: World) -> None:
    # A signed message (not detached) relabelled as a signature: it verifies what it carries,
    # not the commit, and must not pass for the commit's signature.
    payload = world.raw(world.commits["unsigned"])
    inline = world.gpg("--armor", "--sign", "-u", world.pgp["alice"].fingerprint, input=b"something else\n")
    relabelled = inline.replace(b"PGP MESSAGE", b"PGP SIGNATURE")
    sha = world.signed_commit(payload, relabelled)
    e = _fails(verify_commit, world.cache, sha, _keys(world, "alice"))
    assert str(e) == (f"signature verification of commit '{sha}' failed: unable to verify Git commit: unable to "
                      "verify payload with any of the given key rings: no matching key (gpg found no signature "
                      "to check: not a detached signature)")


@pytest.mark.parametrize("signature,kind", [
    (b"-----BEGIN SIGNED MESSAGE-----\nMIIB\n-----END SIGNED MESSAGE-----\n", "x509"),
    (b"-----BEGIN PGP MESSAGE-----\n\nowE=\n-----END PGP MESSAGE-----\n", "unknown"),
])
def test_other_signature_kinds_are_unsupported(world: World, signature: bytes, kind: str) -> None:
    sha = world.signed_commit(world.raw(world.commits["unsigned"]), signature)
    e = _fails(verify_commit, world.cache, sha, _keys(world, "alice"))
    assert str(e) == f"signature verification of commit '{sha}' failed: unsupported signature type: {kind}"


def test_a_pgp_signature_that_is_no_signature_fails_with_gpgs_reason(world: World) -> None:
    garbage = b"-----BEGIN PGP SIGNATURE-----\n\nZ2FyYmFnZQ==\n-----END PGP SIGNATURE-----\n"
    sha = world.signed_commit(world.raw(world.commits["unsigned"]), garbage)
    e = _fails(verify_commit, world.cache, sha, _keys(world, "alice"))
    assert "no matching key (gpg found no signature to check: " in str(e) and "invalid packet" in str(e)


def test_a_signed_merge_of_a_signed_tag_verifies(world: World) -> None:
    raw = world.raw(world.commits["merge"])
    assert b"\nmergetag object " in raw and b"\ngpgsig " in raw
    assert verify_commit(world.cache, world.commits["merge"], _keys(world, "alice")) == world.pgp["alice"].keyid


def test_the_split_is_gits(world: World) -> None:
    raw = world.raw(world.commits["merge"])
    payload, signature = verify.split_commit(raw)
    assert signature.startswith(b"-----BEGIN PGP SIGNATURE-----\n\n") and signature.endswith(b"-----END PGP SIGNATURE-----\n")
    assert b"gpgsig" not in payload and b"\nmergetag object " in payload
    # git's own verdict on the same bytes: its payload, verified with gpg, is good.
    sig_file = world.root / "merge.sig"
    sig_file.write_bytes(signature)
    world.gpg("--verify", str(sig_file), "-", input=payload)


def test_a_sha256_repository_signs_in_gpgsig_sha256(world: World) -> None:
    repo = world.root / "sha256"
    world.git("init", "-q", "--object-format=sha256", str(repo), cwd=world.root)
    sha = _commit(world, "sha256", *_pgp_signing(world.pgp["alice"]), repo=repo)
    assert len(sha) == 64
    assert b"\ngpgsig-sha256 " in world.git("cat-file", "commit", sha, cwd=repo)
    git_dir = repo / ".git"
    assert verify_commit(git_dir, sha, _keys(world, "alice")) == world.pgp["alice"].keyid
    world.git(*_pgp_signing(world.pgp["alice"]), "tag", "-s", "v2.0.0", "-m", "sha256 release", cwd=repo)
    tag = world.git("rev-parse", "refs/tags/v2.0.0", cwd=repo).strip().decode()
    assert verify_tag(git_dir, tag, _keys(world, "alice")) == world.pgp["alice"].keyid


def test_the_object_read_is_the_object_named(world: World) -> None:
    # A replace ref swaps what `git cat-file` shows for an id; verification ignores it.
    repo = world.root / "replaced.git"
    world.git("clone", "-q", "--bare", "--no-local", str(world.cache), str(repo), cwd=world.root)
    world.git("replace", world.commits["unsigned"], world.commits["alice"], cwd=repo)
    e = _fails(verify_commit, repo, world.commits["unsigned"], _keys(world, "alice"))
    assert "not signed" in str(e)
    e = _fails(verify_commit, world.cache, "0" * 40, _keys(world, "alice"))
    assert "unable to read object" in str(e)


# ---- SSH commits ----------------------------------------------------------------------------

def test_an_ssh_signature_returns_the_sha256_fingerprint(world: World) -> None:
    bob = world.ssh["bob"]
    assert verify_commit(world.cache, world.commits["bob"], _keys(world, "bob")) == bob.fingerprint
    assert bob.fingerprint.startswith("SHA256:")


def test_authorized_keys_entries_with_comments_options_and_several_keys(world: World) -> None:
    kind, b64, _ = world.ssh["bob"].public.split(" ", 2)
    text = (f"# the release team\n\n{world.ssh['eve'].public}\n"
            f'restrict,command="echo hi there",from="10.0.0.1" {kind} {b64} bob laptop\n')
    keys = {"team.sshpub": text, "alice.asc": world.pgp["alice"].armored}
    assert verify_commit(world.cache, world.commits["bob"], keys) == world.ssh["bob"].fingerprint
    assert verify_commit(world.cache, world.commits["eve"], keys) == world.ssh["eve"].fingerprint
    assert verify_commit(world.cache, world.commits["alice"], keys) == world.pgp["alice"].keyid


def test_an_ssh_signature_by_a_key_not_in_the_secret_fails_naming_it(world: World) -> None:
    sha = world.commits["eve"]
    e = _fails(verify_commit, world.cache, sha, _keys(world, "bob"))
    assert str(e) == (f"signature verification of commit '{sha}' failed: unable to verify Git commit SSH "
                      "signature: unable to verify payload with any of the given authorized keys: no matching "
                      f"key (signed by unknown key {world.ssh['eve'].fingerprint}, which is not in the Secret)")


def test_an_ssh_signed_commit_changed_after_signing_fails(world: World) -> None:
    forged = world.write("commit", world.raw(world.commits["bob"]).replace(b"\nbob\n", b"\nBOB\n", 1))
    e = _fails(verify_commit, world.cache, forged, _keys(world, "bob"))
    assert f"commit '{forged}' failed: unable to verify Git commit SSH signature" in str(e)
    assert "incorrect signature" in str(e)


def test_an_ssh_signature_in_another_namespace_fails(world: World) -> None:
    payload = world.raw(world.commits["unsigned"])
    data = world.root / "payload"
    data.write_bytes(payload)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "file", "-f", str(world.ssh["bob"].private), str(data)],
                   check=True, capture_output=True, timeout=60)
    sha = world.signed_commit(payload, data.with_name("payload.sig").read_bytes())
    e = _fails(verify_commit, world.cache, sha, _keys(world, "bob"))
    assert "namespace" in str(e)


def test_ssh_key_entries(world: World) -> None:
    sha = world.commits["bob"]
    good = {"broken.sshpub": "ssh-ed25519 not-base64", "bob.sshpub": world.ssh["bob"].public}
    assert verify_commit(world.cache, sha, good) == world.ssh["bob"].fingerprint
    e = _fails(verify_commit, world.cache, sha, {"broken.sshpub": "ssh-ed25519 not-base64"})
    assert "unable to parse authorized keys: broken.sshpub" in str(e)
    # Not `.sshpub`: an OpenPGP key ring for Flux, so no SSH key at all.
    e = _fails(verify_commit, world.cache, sha, {"bob.pub": world.ssh["bob"].public})
    assert str(e) == (f"signature verification of commit '{sha}' failed: SSH signature detected but no SSH "
                      "public keys found in secret (keys with .sshpub suffix)")


# ---- tags -----------------------------------------------------------------------------------

def test_signed_tags_verify(world: World) -> None:
    assert verify_tag(world.cache, world.tags["v1.0.0"], _keys(world, "alice")) == world.pgp["alice"].keyid
    assert verify_tag(world.cache, world.tags["v1.1.0"], _keys(world, "bob", "alice")) == world.ssh["bob"].fingerprint
    assert verify.tag_label(world.cache, world.tags["v1.0.0"]) == f"v1.0.0@{world.tags['v1.0.0']}"


def test_unsigned_tags_are_not_signed_as_flux_says(world: World) -> None:
    sha = world.tags["v0.9.0"]
    e = _fails(verify_tag, world.cache, sha, _keys(world, "alice"))
    assert str(e) == f"cannot verify signature of tag 'v0.9.0@{sha}' since it is not signed"
    assert e.reason == "InvalidGitObject" and not e.stalled
    e = _fails(verify_tag, world.cache, world.tags["lightweight"], _keys(world, "alice"), name="lightweight")
    assert str(e) == "cannot verify signature of tag 'lightweight' since it is not signed"


def test_a_tag_signed_by_another_key_fails(world: World) -> None:
    sha = world.tags["v6.6.6"]
    e = _fails(verify_tag, world.cache, sha, _keys(world, "alice"))
    assert str(e) == (f"signature verification of tag 'v6.6.6@{sha}' failed: unable to verify Git tag: unable "
                      "to verify payload with any of the given key rings: no matching key (signed by unknown "
                      f"key {world.pgp['mallory'].keyid}, which is not in the Secret)")
    assert e.reason == "InvalidTagSignature"


def test_a_tag_changed_after_signing_fails(world: World) -> None:
    forged = world.write("tag", world.raw(world.tags["v1.0.0"]).replace(b"release 1.0.0", b"release 6.6.6"))
    e = _fails(verify_tag, world.cache, forged, _keys(world, "alice"))
    assert str(e).startswith(f"signature verification of tag 'v1.0.0@{forged}' failed: unable to verify Git tag")
    assert "BAD signature" in str(e)
    forged = world.write("tag", world.raw(world.tags["v1.1.0"]).replace(b"release 1.1.0", b"release 6.6.6"))
    e = _fails(verify_tag, world.cache, forged, _keys(world, "bob"))
    assert "unable to verify Git tag SSH signature" in str(e) and "incorrect signature" in str(e)


def test_the_tag_split_is_gits() -> None:
    raw = (b"object " + b"1" * 40 + b"\ntype commit\ntag t\ntagger A <a@b> 1 +0000\n"
           b"gpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n other\n -----END PGP SIGNATURE-----\n\n"
           b"message quoting\n-----BEGIN PGP SIGNATURE-----\nnot this one\n-----END PGP SIGNATURE-----\n"
           b"-----BEGIN SSH SIGNATURE-----\nthis\n-----END SSH SIGNATURE-----\n")
    payload, signature = verify.split_tag(raw)
    assert signature == b"-----BEGIN SSH SIGNATURE-----\nthis\n-----END SSH SIGNATURE-----\n"
    assert payload == (b"object " + b"1" * 40 + b"\ntype commit\ntag t\ntagger A <a@b> 1 +0000\n\n"
                       b"message quoting\n-----BEGIN PGP SIGNATURE-----\nnot this one\n-----END PGP SIGNATURE-----\n")
    assert verify.split_tag(b"object x\n\nno signature\n") == (b"object x\n\nno signature\n", b"")


# ---- modes and messages -------------------------------------------------------------------------

@pytest.mark.parametrize("mode,expected", [(None, "HEAD"), ("", "HEAD"), ("head", "HEAD"), ("HEAD", "HEAD")])
def test_head_modes(mode: str | None, expected: str) -> None:
    assert check_mode(mode, GitRef(branch="main")) == expected


@pytest.mark.parametrize("ref", [GitRef(tag="v1.0.0"), GitRef(semver=">=1.0.0"), GitRef(name="refs/tags/v1.0.0"),
                                 GitRef(branch="main", tag="v1.0.0")])
@pytest.mark.parametrize("mode", ["Tag", "TagAndHEAD"])
def test_tag_modes_with_a_tag_ref(mode: str, ref: GitRef) -> None:
    assert check_mode(mode, ref) == mode


@pytest.mark.parametrize("ref", [GitRef(branch="main"), GitRef(), GitRef(name="refs/heads/main"),
                                 GitRef(name="refs/pull/1/head"), GitRef(commit="a" * 40, tag="v1.0.0")])
def test_tag_modes_without_a_tag_ref_stall(ref: GitRef) -> None:
    e = _fails(check_mode, "Tag", ref)
    assert str(e) == "cannot verify tag object's signature if a tag reference is not specified"
    assert e.reason == "InvalidVerificationMode" and e.stalled


def test_a_commit_checkout_knows_its_tag_only_by_name() -> None:
    e = _fails(check_mode, "TagAndHEAD", GitRef(commit="a" * 40, name="refs/tags/v1.0.0"))
    assert str(e) == "cannot verify signature of tag 'v1.0.0' since it is not signed"
    assert e.reason == "InvalidGitObject" and not e.stalled


def test_an_unknown_mode_is_refused_like_the_crd_enum() -> None:
    e = _fails(check_mode, "tag", GitRef(tag="v1"))
    assert str(e) == ('spec.verify.mode: Unsupported value: "tag": supported values: "head", "HEAD", "Tag", '
                      '"TagAndHEAD"')


def test_verified_message_is_fluxs() -> None:
    assert verify.verified_message(commit=("abc", "5982D0279C227FFD")) == (
        "verified signature of\n\t- commit 'abc' with key '5982D0279C227FFD'")
    assert verify.verified_message(tag=("v0.1.0@def", "SHA256:x"), commit=("abc", "5982D0279C227FFD")) == (
        "verified signature of\n\t- tag 'v0.1.0@def' with key 'SHA256:x'\n\t- commit 'abc' with key '5982D0279C227FFD'")


def test_verify_revision_does_what_flux_does_for_one_checkout(world: World) -> None:
    alice, sha, tag = world.pgp["alice"].keyid, world.commits["alice"], world.tags["v1.0.0"]
    done = verify.verify_revision(world.cache, "TagAndHEAD", GitRef(tag="v1.0.0"), sha, _keys(world, "alice"),
                                  tag_object_sha=tag)
    assert done.mode == "TagAndHEAD"
    assert done.message == (f"verified signature of\n\t- tag 'v1.0.0@{tag}' with key '{alice}'\n"
                            f"\t- commit '{sha}' with key '{alice}'")
    done = verify.verify_revision(world.cache, "head", GitRef(branch="main"), sha, _keys(world, "alice"))
    assert done.message == f"verified signature of\n\t- commit '{sha}' with key '{alice}'"
    e = _fails(verify.verify_revision, world.cache, "Tag", GitRef(tag="lightweight"), sha, _keys(world, "alice"),
               tag_name="lightweight")
    assert str(e) == "cannot verify signature of tag 'lightweight' since it is not signed"
