//! Criterion benchmarks of the per-request work that does not involve the network:
//! validation, fingerprint, token generation, envelope seal/open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use tokenvault::crypto::{fingerprint, open, seal, Keyring, RecordAad};
use tokenvault::secret::KeyBytes;
use tokenvault::token::Token;
use tokenvault::validate::{detect_brand, luhn_valid, normalize_iban, normalize_pan, validate_routing_number};

fn validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    g.bench_function("luhn_16", |b| b.iter(|| luhn_valid(black_box(b"4111111111111111"))));
    g.bench_function("brand", |b| b.iter(|| detect_brand(black_box(b"4011780000000006"))));
    g.bench_function("normalize_pan", |b| {
        b.iter(|| normalize_pan(black_box("4242 4242 4242 4242")).is_ok())
    });
    g.bench_function("iban", |b| {
        b.iter(|| normalize_iban(black_box("GB82 WEST 1234 5698 7654 32")).is_ok())
    });
    g.bench_function("aba", |b| {
        b.iter(|| validate_routing_number(black_box("021000021")).is_ok())
    });
    g.finish();
}

fn keyed(c: &mut Criterion) {
    let key = KeyBytes::new([7; 32]);
    c.bench_function("fingerprint", |b| {
        b.iter(|| fingerprint(&key, "shop", "card", black_box(b"4111111111111111")))
    });
    c.bench_function("token_opaque", |b| b.iter(|| Token::generate_opaque().unwrap()));
    c.bench_function("token_numeric", |b| {
        b.iter(|| Token::generate_numeric(black_box("4111111111111111")).unwrap())
    });
}

fn envelope(c: &mut Criterion) {
    let ring = Keyring::generate(0).unwrap();
    let aad = RecordAad {
        token: "tok_AAAAAAAAAAAAAAAAAAAAAAAA",
        tenant: "shop",
        record_type: 1,
    };
    let mut g = c.benchmark_group("envelope");
    for size in [32usize, 256, 1024] {
        let payload = vec![0x42u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &payload, |b, p| {
            b.iter(|| seal(&ring, aad, p).unwrap())
        });
        let sealed = seal(&ring, aad, &payload).unwrap();
        g.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, e| {
            b.iter(|| open(&ring, aad, e).unwrap())
        });
    }
    g.finish();
}

/// A typical card record's public header: encode, and decode (what every read of
/// a record pays).
fn record(c: &mut Criterion) {
    use tokenvault::crypto::Envelope;
    use tokenvault::vault::record::{CardMeta, Metadata, StoredRecord};
    let record = StoredRecord {
        record_type: 1,
        created_nanos: 1_764_806_400_000_000_000,
        expires_unix: None,
        meta: Metadata {
            token: "tok_3kTq9vYbW2xZ8mN4pR7sL1".into(),
            kind: "card".into(),
            tenant: "shop-eu".into(),
            customer: None,
            created_at: "2026-12-04T08:00:00Z".into(),
            expires_at: None,
            card: Some(CardMeta {
                brand: "visa".into(),
                bin: "42424242".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2031,
                fingerprint: "fp_0123456789abcdef0123456789abcdef0123456789a".into(),
            }),
            bank_account: None,
        },
        envelope: Envelope(vec![7; 120]),
    };
    let bytes = record.encode();
    let mut g = c.benchmark_group("record");
    g.bench_function("encode", |b| b.iter(|| black_box(&record).encode()));
    g.bench_function("decode", |b| {
        b.iter(|| StoredRecord::decode(black_box(&bytes)).unwrap())
    });
    g.finish();
}

/// Decoding a tokenize request body: the well-formed case every request takes,
/// and a body with an unknown field, which is decoded a second time to name it.
fn request(c: &mut Criterion) {
    use tokenvault::api::body::decode_object;
    use tokenvault::vault::input::TokenizeRequest;
    let good = br#"{"card":{"number":"4111111111111111","exp_month":12,"exp_year":2030,"cvc":"123","holder_name":"Ada Lovelace"},"customer":"cus_1","reuse_existing":false}"#;
    let bad = br#"{"card":{"number":"4111111111111111","exp_month":12,"exp_year":2030,"colour":"red"}}"#;
    assert!(decode_object::<TokenizeRequest>(good).is_ok());
    assert!(decode_object::<TokenizeRequest>(bad).is_err());
    let mut g = c.benchmark_group("request");
    g.bench_function("decode_tokenize", |b| {
        b.iter(|| decode_object::<TokenizeRequest>(black_box(good)).unwrap())
    });
    g.bench_function("decode_unknown_field", |b| {
        b.iter(|| decode_object::<TokenizeRequest>(black_box(bad)).unwrap_err())
    });
    g.finish();
}

criterion_group!(benches, validation, keyed, envelope, record, request);
criterion_main!(benches);
