//! Prints what MLS costs svs at room sizes of 10, 100 and 500 devices: bytes and time to make
//! and to process a commit adding one device and one removing it, and an application message's
//! size and encrypt/decrypt time. Figures, not assertions: run with
//! `cargo run --release -p svs-mls --example commit_bench`.
#![allow(clippy::unwrap_used)] // a bench: a panic is the report

use std::time::Instant;
use svs_mls::{Device, Event};

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let identity = svs_common::identity::generate(2048).unwrap();
    println!(
        "devices  add: commit B  make ms  process ms  welcome B | remove: commit B  make ms  process ms | message B  encrypt ms  decrypt ms"
    );
    let mut made = 0;
    let mut device = |label: &str| {
        made += 1;
        Device::create(
            &dir.path().join(format!("{label}-{made}")),
            &identity,
            "bench",
            1,
        )
        .unwrap()
    };
    for size in [10usize, 100, 500] {
        let mut owner = device("owner");
        let mut observer = device("observer");
        let group = owner.create_group().unwrap();
        let mut claimed = vec![(
            observer.certificate().clone(),
            observer.key_packages(1).unwrap().remove(0),
        )];
        for _ in 2..size {
            let mut other = device("member");
            claimed.push((
                other.certificate().clone(),
                other.key_packages(1).unwrap().remove(0),
            ));
        }
        let commit = owner.add(&group, &claimed).unwrap();
        owner.commit_accepted(&group).unwrap();
        observer.join(commit.welcome.as_ref().unwrap()).unwrap();

        let mut newcomer = device("newcomer");
        let package = (
            newcomer.certificate().clone(),
            newcomer.key_packages(1).unwrap().remove(0),
        );
        let start = Instant::now();
        let add = owner.add(&group, &[package]).unwrap();
        let add_make = ms(start);
        owner.commit_accepted(&group).unwrap();
        let start = Instant::now();
        assert!(matches!(
            observer.process(&group, &add.message).unwrap(),
            Event::Commit { .. }
        ));
        let add_process = ms(start);

        let start = Instant::now();
        let remove = owner.remove(&group, &[newcomer.me()]).unwrap();
        let remove_make = ms(start);
        owner.commit_accepted(&group).unwrap();
        let start = Instant::now();
        observer.process(&group, &remove.message).unwrap();
        let remove_process = ms(start);

        let body = [b'x'; 100];
        let start = Instant::now();
        let message = owner.encrypt(&group, &body).unwrap();
        let encrypt = ms(start);
        let start = Instant::now();
        observer.process(&group, &message).unwrap();
        let decrypt = ms(start);
        println!(
            "{size:>7}  {:>12}  {add_make:>7.1}  {add_process:>10.1}  {:>9} | {:>16}  {remove_make:>7.1}  {remove_process:>10.1} | {:>9}  {encrypt:>10.2}  {decrypt:>10.2}",
            add.message.len(),
            add.welcome.as_ref().map_or(0, Vec::len),
            remove.message.len(),
            message.len(),
        );
    }
    println!(
        "(each operation includes writing the device's whole state to disk, as svs does after every change)"
    );
    println!();
    envelopes();
}

/// Today's sealed envelope (RSA-3072 identity keys) for the same 100-byte message, to compare
/// with the MLS message above: bytes on the wire and the sender's and a recipient's CPU.
fn envelopes() {
    use prost::Message as _;
    use svs_common::sealed;
    let sender = svs_common::identity::generate(3072).unwrap();
    let keys: Vec<rsa::PrivateKey> = (0..10)
        .map(|_| svs_common::identity::generate(3072).unwrap())
        .collect();
    let publics: Vec<rsa::PublicKey> = keys.iter().map(rsa::PrivateKey::to_public_key).collect();
    let names: Vec<String> = (0..10).map(|n| format!("peer{n}")).collect();
    println!("today's envelope (RSA-3072)  recipients  bytes  seal ms  verify+open ms");
    for count in [1usize, 10] {
        let recipients: Vec<sealed::SealRecipient<'_>> = (0..count)
            .map(|n| sealed::SealRecipient {
                name: &names[n],
                key: &publics[n],
            })
            .collect();
        let params = sealed::SealParams {
            sender: "bench",
            sender_key: &sender,
            counter: 1,
            timestamp_ms: svs_common::time::now_ms(),
            recipients: &recipients,
        };
        let mut rng = svs_common::identity::os_rng();
        let start = Instant::now();
        let envelope = sealed::seal(&mut rng, &params, &[b'x'; 100]).unwrap();
        let seal = ms(start);
        let start = Instant::now();
        let header = sealed::verify(&envelope, &sender.to_public_key()).unwrap();
        sealed::open(&mut rng, &envelope, &header, &names[0], &keys[0]).unwrap();
        let open = ms(start);
        println!(
            "{:>28}  {count:>10}  {:>5}  {seal:>7.1}  {open:>14.1}",
            "",
            envelope.encoded_len()
        );
    }
    println!(
        "(an MLS message is the same size for any number of recipients: the group shares its keys)"
    );
}
