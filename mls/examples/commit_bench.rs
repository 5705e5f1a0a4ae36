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
}
