//! Every decoder of outside bytes in the protocol code, fed arbitrary and mutated-valid input:
//! none may panic, and each failure is a typed error. `tests/corpus/` keeps the shapes that once
//! broke something (or came close), one hex file per input, checked on every run.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use proptest::prelude::*;
use std::sync::OnceLock;
use svs_common::proto::directory::{Envelope, WrappedKey};
use svs_common::rsa::PrivateKey;
use svs_common::sealed::{self, Header, SealParams, SealRecipient};
use svs_common::token::{Claims, TokenIssuer, TokenVerifier};
use svs_common::{Error, identity, registration};

struct Keys {
    alice: PrivateKey,
    bob: PrivateKey,
    issuer: TokenIssuer,
    envelope: Envelope,
    token: String,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let alice = identity::generate(2048).unwrap();
        let bob = identity::generate(2048).unwrap();
        let bob_pub = bob.to_public_key();
        let envelope = sealed::seal(
            &mut identity::os_rng(),
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
            b"hello",
        )
        .unwrap();
        let issuer = TokenIssuer::new(identity::generate(2048).unwrap());
        let token = issuer
            .issue(&Claims {
                session_id: [1; 16],
                name: "alice".into(),
                fingerprint: [2; 32],
                issued_at_ms: 1,
                expires_at_ms: u64::MAX,
            })
            .unwrap();
        Keys {
            alice,
            bob,
            issuer,
            envelope,
            token,
        }
    })
}

fn typed(e: &Error) -> bool {
    matches!(
        e,
        Error::Malformed { .. }
            | Error::InvalidName { .. }
            | Error::BadSignature
            | Error::Undecryptable
            | Error::InvalidToken(_)
            | Error::ExpiredToken
    )
}

/// Flips one bit, then cuts or extends: a valid input gone slightly wrong.
fn mutate(mut bytes: Vec<u8>, at: usize, bit: u8, resize: i16) -> Vec<u8> {
    if !bytes.is_empty() {
        let i = at % bytes.len();
        bytes[i] ^= 1 << (bit % 8);
    }
    let len = (bytes.len() as i64 + i64::from(resize)).max(0) as usize;
    bytes.resize(len, 0xa5);
    bytes
}

/// Everything a recipient does with an envelope, as far as the bytes get.
fn receive(envelope: &Envelope) -> Result<(), Error> {
    let k = keys();
    let header = sealed::verify(envelope, &k.alice.to_public_key())?;
    sealed::open(&mut identity::os_rng(), envelope, &header, "bob", &k.bob)?;
    Ok(())
}

fn check_header(bytes: &[u8]) {
    if let Err(e) = Header::decode(bytes) {
        assert!(typed(&e), "{e:?}");
    }
}

fn check_claims(bytes: &[u8]) {
    if let Err(e) = Claims::decode(bytes) {
        assert!(typed(&e), "{e:?}");
    }
}

fn check_token(text: &str) {
    let verifier: &TokenVerifier = keys().issuer.verifier();
    if let Err(e) = verifier.verify(text, 2) {
        assert!(typed(&e), "{e:?}");
    }
    if let Err(e) = svs_common::token::unverified_claims(text) {
        assert!(typed(&e), "{e:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn headers_arbitrary(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_header(&bytes);
        let mut framed = sealed::HEADER_MAGIC.to_vec();
        framed.extend_from_slice(&bytes);
        check_header(&framed);
    }

    #[test]
    fn headers_mutated(at in any::<usize>(), bit in any::<u8>(), resize in -40i16..40) {
        check_header(&mutate(keys().envelope.header.to_vec(), at, bit, resize));
    }

    #[test]
    fn envelopes_mutated(field in 0u8..4, at in any::<usize>(), bit in any::<u8>(), resize in -40i16..40) {
        let mut envelope = keys().envelope.clone();
        match field {
            0 => envelope.header = mutate(envelope.header.to_vec(), at, bit, resize).into(),
            1 => envelope.ciphertext = mutate(envelope.ciphertext.to_vec(), at, bit, resize).into(),
            2 => envelope.signature = mutate(envelope.signature.to_vec(), at, bit, resize).into(),
            _ => envelope.wrapped_keys[0].wrapped_key =
                mutate(envelope.wrapped_keys[0].wrapped_key.to_vec(), at, bit, resize).into(),
        }
        // A bit flip or a resize anywhere is caught by the signature or the parser.
        let result = receive(&envelope);
        prop_assert!(result.is_err());
        prop_assert!(typed(&result.unwrap_err()));
    }

    #[test]
    fn envelopes_with_arbitrary_wrapped_keys(count in 0usize..4, name in "[a-z]{0,40}", len in 0usize..600) {
        let mut envelope = keys().envelope.clone();
        envelope.wrapped_keys = (0..count)
            .map(|_| WrappedKey { recipient: name.clone(), wrapped_key: vec![7u8; len].into() })
            .collect();
        let result = receive(&envelope);
        prop_assert!(result.is_err());
        prop_assert!(typed(&result.unwrap_err()));
        // Opening without verifying first must not panic either.
        if let Ok(header) = Header::decode(&envelope.header) {
            let _ = sealed::open(&mut identity::os_rng(), &envelope, &header, "bob", &keys().bob);
        }
    }

    #[test]
    fn claims_arbitrary(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_claims(&bytes);
    }

    #[test]
    fn tokens_arbitrary(text in ".{0,300}") {
        check_token(&text);
        check_token(&format!("svs1.{text}"));
    }

    #[test]
    fn tokens_mutated(at in any::<usize>(), bit in 0u8..7, resize in -20i16..20) {
        let token = mutate(keys().token.clone().into_bytes(), at, bit, resize);
        if let Ok(text) = String::from_utf8(token) {
            check_token(&text);
        }
    }

    #[test]
    fn encoders_refuse_what_does_not_fit(name_len in 0usize..400, spki_len in 0usize..70_000) {
        let name = "n".repeat(name_len);
        let spki = vec![1u8; spki_len];
        let statement = registration::statement("service", &name, &spki, &[0; 32]);
        prop_assert_eq!(statement.is_ok(), name_len <= 255 && spki_len <= 65_535);
        let header = Header {
            message_id: [0; 16],
            sender: name.clone(),
            sender_fingerprint: [0; 32],
            counter: 0,
            timestamp_ms: 0,
            recipients: vec![],
            nonce: [0; 12],
            key_commitment: [0; 32],
        };
        prop_assert_eq!(header.encode().is_ok(), name_len <= 255);
    }
}

#[test]
fn seal_refuses_bad_names_and_recipient_counts_as_errors() {
    let k = keys();
    let bob = k.bob.to_public_key();
    let seal = |sender: &str, recipients: &[SealRecipient<'_>]| {
        sealed::seal(
            &mut identity::os_rng(),
            &SealParams {
                sender,
                sender_key: &k.alice,
                counter: 1,
                timestamp_ms: 1,
                recipients,
            },
            b"x",
        )
    };
    let long = "x".repeat(300);
    assert!(
        seal(
            &long,
            &[SealRecipient {
                name: "bob",
                key: &bob
            }]
        )
        .is_err()
    );
    assert!(
        seal(
            "alice",
            &[SealRecipient {
                name: &long,
                key: &bob
            }]
        )
        .is_err()
    );
    assert!(seal("alice", &[]).is_err());
    let many: Vec<SealRecipient<'_>> = (0..sealed::MAX_HEADER_RECIPIENTS + 1)
        .map(|_| SealRecipient {
            name: "bob",
            key: &bob,
        })
        .collect();
    assert!(seal("alice", &many).is_err());
    let twice = [
        SealRecipient {
            name: "bob",
            key: &bob,
        },
        SealRecipient {
            name: "BOB",
            key: &bob,
        },
    ];
    assert!(seal("alice", &twice).is_err());
}

#[test]
fn the_corpus_is_refused_with_typed_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let hex_text: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<String>()
            .split_whitespace()
            .collect();
        let bytes = hex::decode(hex_text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let result = match name.split('-').next().unwrap() {
            "header" => Header::decode(&bytes).map(|_| ()),
            "claims" => Claims::decode(&bytes).map(|_| ()),
            "token" => keys()
                .issuer
                .verifier()
                .verify(&String::from_utf8_lossy(&bytes), 2)
                .map(|_| ()),
            other => panic!("{name}: unknown decoder {other}"),
        };
        let err = result.expect_err(&name);
        assert!(typed(&err), "{name}: {err:?}");
        checked += 1;
    }
    assert!(checked >= 6, "the corpus has its entries ({checked})");
}
