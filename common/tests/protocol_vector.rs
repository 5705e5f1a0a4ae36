//! Checks the published test vector of docs/protocol.md: fixed keys and seeded randomness give
//! byte-identical registration statement, token claims and envelope, and the envelope opens.
//! `SVS_WRITE_VECTORS=1 cargo test -p svs-common --test protocol_vector` regenerates the files
//! (only when the format changes on purpose; docs/protocol.md must change with them).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use rand::SeedableRng;
use rand::rngs::ChaCha20Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use svs_common::identity;
use svs_common::rsa::PrivateKey;
use svs_common::sealed::{self, SealParams, SealRecipient};
use svs_common::token::Claims;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn key(name: &str) -> PrivateKey {
    use svs_common::rsa::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(vectors_dir().join(format!("{name}.pem"))).unwrap();
    PrivateKey::from_pkcs8_pem(&pem).unwrap()
}

/// The values the vector fixes, computed from the fixtures.
fn compute() -> BTreeMap<&'static str, String> {
    let alice = key("alice");
    let bob = key("bob");
    let alice_spki = identity::public_key_der(&alice.to_public_key());
    let bob_pub = bob.to_public_key();
    let mut out = BTreeMap::new();
    out.insert(
        "alice_fingerprint",
        hex::encode(identity::fingerprint(&alice.to_public_key())),
    );
    out.insert(
        "bob_fingerprint",
        hex::encode(identity::fingerprint(&bob_pub)),
    );
    let challenge = [0x11u8; 32];
    out.insert(
        "registration_statement",
        hex::encode(
            svs_common::registration::statement(
                "svs-test-directory",
                "alice",
                &alice_spki,
                &challenge,
            )
            .unwrap(),
        ),
    );
    let claims = Claims {
        session_id: [0x22; 16],
        name: "alice".into(),
        fingerprint: identity::fingerprint(&alice.to_public_key()),
        issued_at_ms: 1_767_225_600_000,
        expires_at_ms: 1_767_268_800_000,
    };
    out.insert("token_claims", hex::encode(claims.encode().unwrap()));

    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let envelope = sealed::seal(
        &mut rng,
        &SealParams {
            sender: "alice",
            sender_key: &alice,
            counter: 1,
            timestamp_ms: 1_767_225_600_000,
            recipients: &[SealRecipient {
                name: "bob",
                key: &bob_pub,
            }],
        },
        b"hello bob",
    )
    .unwrap();
    out.insert("envelope_header", hex::encode(&envelope.header));
    out.insert(
        "envelope_wrapped_key_bob",
        hex::encode(&envelope.wrapped_keys[0].wrapped_key),
    );
    out.insert("envelope_ciphertext", hex::encode(&envelope.ciphertext));
    out.insert("envelope_signature", hex::encode(&envelope.signature));
    out.insert("signature_input_sha256", {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            sealed::signature_input(&envelope).unwrap(),
        ))
    });
    out
}

fn read_expected() -> BTreeMap<String, String> {
    std::fs::read_to_string(vectors_dir().join("v1.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(" = ").expect("key = value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn published_vector_matches() {
    let computed = compute();
    if std::env::var_os("SVS_WRITE_VECTORS").is_some() {
        let mut text = String::from("# svs protocol v1 test vector; see docs/protocol.md\n");
        for (k, v) in &computed {
            text.push_str(&format!("{k} = {v}\n"));
        }
        std::fs::write(vectors_dir().join("v1.txt"), text).unwrap();
    }
    let expected = read_expected();
    assert_eq!(expected.len(), computed.len());
    for (k, v) in &computed {
        assert_eq!(expected.get(*k), Some(v), "vector field {k}");
    }
}

#[test]
fn published_envelope_opens_for_bob_only() {
    let expected = read_expected();
    let field = |k: &str| bytes::Bytes::from(hex::decode(&expected[k]).unwrap());
    let envelope = svs_common::proto::directory::Envelope {
        header: field("envelope_header"),
        wrapped_keys: vec![svs_common::proto::directory::WrappedKey {
            recipient: "bob".into(),
            wrapped_key: field("envelope_wrapped_key_bob"),
        }],
        ciphertext: field("envelope_ciphertext"),
        signature: field("envelope_signature"),
    };
    let alice = key("alice");
    let bob = key("bob");
    let header = sealed::verify(&envelope, &alice.to_public_key()).unwrap();
    assert_eq!(header.sender, "alice");
    assert_eq!(header.counter, 1);
    let plaintext = sealed::open(&mut identity::os_rng(), &envelope, &header, "bob", &bob).unwrap();
    assert_eq!(plaintext, b"hello bob");
    // Alice's key does not open bob's wrapped key; bob's key does not verify as alice.
    assert!(sealed::open(&mut identity::os_rng(), &envelope, &header, "bob", &alice).is_err());
    assert!(sealed::verify(&envelope, &bob.to_public_key()).is_err());
    // Any flipped bit in the header breaks the signature.
    let mut tampered = envelope.clone();
    let mut h = tampered.header.to_vec();
    h[30] ^= 0x01;
    tampered.header = h.into();
    assert!(sealed::verify(&tampered, &alice.to_public_key()).is_err());
}
