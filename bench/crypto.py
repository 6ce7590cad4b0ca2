"""Field encryption: the token layer against raw AES-GCM, a vault read, and data-key rotation (PostgreSQL).

Prints, in one run:
1. seal + open of a 64-byte field through the service's crypto layer (key cache lookup, token header, AAD binding
   to tenant/subject/field/version) against raw ``AESGCM.encrypt``/``decrypt`` with a cached key, and the ratio;
2. a vault read of a 20-field profile with 5 L3 fields, in process on PostgreSQL (per-field decisions in one round
   trip, opening the sealed values, obligations applied): median and p99;
3. re-encryption during a data-key rotation: values per second.
Run: ``.venv/bin/python -m bench.crypto [--subjects N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import insert

from govsvc import create_app, settle_heap
from govsvc.audit.service import write_pending
from govsvc.bootstrap import seed_all
from govsvc.config import PROJECT_ROOT, Settings
from govsvc.core import migrate
from govsvc.core.db import Database, utcnow
from govsvc.crypto import tokens
from govsvc.crypto.keys import KEY_EPOCH_INFO, KeyStore
from govsvc.crypto.providers import LocalKeyProvider
from govsvc.crypto.tokens import Ciphers
from govsvc.subjects.service import IdentifierInput, create_subject, get_subject_key
from govsvc.taxonomy.service import TaxonomyCache
from govsvc.vault.models import VaultField
from govsvc.vault.service import run_rotation, start_rotation
from tests.support.postgres import PostgresCluster

SECRET = "bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 - a throwaway bench database
PROFILE = {  # 20 fields, 5 of them L3 (id_number, passport_number, bank_card, gps_location, health_notes)
    "customer_id": "C-000123",
    "name": "张伟",
    "nickname": "伟哥",
    "email": "zhang.wei@example.cn",
    "mobile": "+8613812345678",
    "landline": "+861062345678",
    "address": "北京市海淀区中关村大街1号",
    "wechat_id": "wxid_zhangwei88",
    "birth_date": "1985-03-07",
    "gender": "男",
    "id_number": "11010519491231002X",
    "passport_number": "E12345678",
    "bank_card": "6222021234567890128",
    "purchase_history": "2026-10: 3 orders, 1,280 CNY",
    "preferences": "短信优先",
    "city": "北京",
    "gps_location": "39.9834,116.3162",
    "health_notes": "青霉素过敏",
    "postal_code": "100080",
    "loyalty_tier": "gold",
}


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def bench_token_layer(seconds: float) -> None:
    value = os.urandom(32).hex()  # 64 characters
    key = os.urandom(32)
    raw = AESGCM(key)
    keys = KeyStore(LocalKeyProvider({1: os.urandom(32)}))
    request = SimpleNamespace(info={KEY_EPOCH_INFO: 0})  # a request's session once its key epoch was read
    keys.sync(request)  # type: ignore[arg-type] - the epoch is already in session.info: no database read
    keys.cache.put(Ciphers.of("subject:sub_bench", 1, key))
    bound = tokens.context("default", "sub_bench", "id_number")
    plaintext = value.encode()

    def raw_pair() -> None:
        nonce = os.urandom(12)
        raw.decrypt(nonce, raw.encrypt(nonce, plaintext, bound), bound).decode()

    def layer_pair() -> None:  # what the vault does per value: the cached key, seal_with, then open
        token = keys.seal_with(keys.cache.get("subject:sub_bench", 1), "sub_bench", "id_number", value)
        keys.open(request, "sub_bench", "id_number", token)  # type: ignore[arg-type] - a cache hit reads nothing

    rates = {}
    for name, pair in (("raw", raw_pair), ("layer", layer_pair), ("raw2", raw_pair), ("layer2", layer_pair)):
        count, deadline = 0, time.perf_counter() + seconds / 4
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            for _ in range(1000):
                pair()
            count += 1000
        rates[name] = count / (time.perf_counter() - start)
    raw_rate, layer_rate = max(rates["raw"], rates["raw2"]), max(rates["layer"], rates["layer2"])
    print("\n== seal + open of a 64-byte field, cached key (pairs per second, best of two) ==")
    print(f"raw AESGCM.encrypt + decrypt          {raw_rate:>10,.0f}")
    print(f"KeyStore.seal_with + KeyStore.open    {layer_rate:>10,.0f}")
    print(f"ratio layer/raw: {layer_rate / raw_rate:.2f}")


def bench_vault_read(app, subjects: int, reads: int) -> None:
    database = app.extensions["govsvc.db"]
    vault = app.extensions["govsvc.vault"]
    engine = app.extensions["govsvc.decisions"]
    taxonomy_cache = TaxonomyCache()
    subject_ids = []
    with database.transaction() as session:
        taxonomy = taxonomy_cache.current(session)
        for number in range(subjects):
            subject = create_subject(
                session,
                app.extensions["govsvc.field_keys"],
                identifiers=[IdentifierInput(kind="crm_id", value=f"C-{number}", system="crm")],
                jurisdictions=["pipl"],
                known_jurisdictions=["pipl"],
            )
            vault.write(session, taxonomy, subject, PROFILE, actor="bench")
            subject_ids.append(subject.subject_id)

    def read(subject_id: str) -> int:  # as GET /v1/vault/subjects/{id}/profile does it
        session = database.new_autocommit_session()
        try:
            views = vault.read_for_purpose(
                session,
                engine,
                get_subject_key(session, subject_id),
                purpose="essential.legal_obligation",
                role="dpo",
                principal_id="client:bench",
                justification="benchmark run",
            )
            write_pending(session)  # its audit events (data.unmasked of the L3 plaintext): one self-committing INSERT
            session.commit()
            return sum(view.value is not None for view in views.values())
        finally:
            session.close()

    for subject_id in subject_ids[:50]:
        read(subject_id)  # warm: keys unwrapped into the cache, statements prepared
    samples = []
    for number in range(reads):
        start = time.perf_counter()
        shown = read(subject_ids[number % len(subject_ids)])
        samples.append((time.perf_counter() - start) * 1000)
    print("\n== vault read: 20 fields (5 L3), in process, PostgreSQL, data keys cached (role dpo) ==")
    print(
        f"reads {reads:,}  fields with a value {shown}/20  median {statistics.median(samples):.2f} ms  "
        f"p99 {_percentile(samples, 0.99):.2f} ms"
    )


def bench_rotation(app, subjects: int) -> None:
    database: Database = app.extensions["govsvc.db"]
    keys: KeyStore = app.extensions["govsvc.keys"]
    with database.transaction() as session:
        start = time.perf_counter()
        rotation = start_rotation(session, keys, subject=None, actor="bench")
        new_keys = time.perf_counter() - start
        rotation_id = rotation.rotation_id
    keys.cache.clear()
    start = time.perf_counter()
    done = run_rotation(database, keys, rotation_id, chunk=2000)
    elapsed = time.perf_counter() - start
    print("\n== data-key rotation: re-encrypting every sealed value (PostgreSQL, chunks of 2,000) ==")
    print(
        f"new key versions for {subjects:,} subjects in {new_keys:.1f} s; re-encrypted {done.values_done:,} values "
        f"in {elapsed:.1f} s = {done.values_done / elapsed:,.0f} values/s"
    )


def _bulk_profiles(app, subjects: int) -> None:
    """Many profiles quickly: sealed as the vault seals them, inserted in bulk."""
    database = app.extensions["govsvc.db"]
    keys: KeyStore = app.extensions["govsvc.keys"]
    with database.transaction() as session:
        taxonomy = TaxonomyCache().current(session)
        rows = []
        for number in range(subjects):
            subject = create_subject(
                session,
                app.extensions["govsvc.field_keys"],
                identifiers=[IdentifierInput(kind="crm_id", value=f"R-{number}", system="crm")],
                jurisdictions=["pipl"],
                known_jurisdictions=["pipl"],
            )
            ciphers = keys.subject_ciphers(session, subject.subject_id, create=True)
            for field, value in PROFILE.items():
                category = taxonomy.fields[field]
                level = taxonomy.level(category)
                sealed = level != "L1"
                rows.append(
                    {
                        "subject_pk": subject.pk,
                        "field": field,
                        "category": category,
                        "level": level,
                        "value_plain": None if sealed else value,
                        "value_enc": tokens.seal(
                            ciphers, value.encode(), tokens.context(keys.tenant, subject.subject_id, field)
                        )
                        if sealed
                        else None,
                        "key_version": 1 if sealed else None,
                        "version": 1,
                        "updated_at": utcnow(),
                    }
                )
        session.execute(insert(VaultField), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=5_000, help="profiles re-encrypted by the rotation")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores")
    bench_token_layer(args.seconds)
    cluster = PostgresCluster().start()
    try:
        cluster.admin_execute("CREATE DATABASE bench")
        with tempfile.TemporaryDirectory(prefix="govsvc-bench-") as directory:
            settings = Settings(
                environment="testing",
                database_url=cluster.url("bench"),
                secret_key=SECRET,
                instance_dir=str(Path(directory)),
                policy_dir=str(PROJECT_ROOT / "policies"),
                log_level="WARNING",
                audit_sequencer="off",
            )
            migrate.upgrade(settings.resolved_database_url)
            seed = Database(settings.resolved_database_url)
            seed_all(seed, settings, actor="bench")
            seed.dispose()
            app = create_app(settings)
            settle_heap()  # as wsgi.py does once the served app is built
            bench_vault_read(app, subjects=200, reads=3000)
            _bulk_profiles(app, args.subjects)
            bench_rotation(app, args.subjects + 200)
            app.extensions["govsvc.db"].dispose()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
