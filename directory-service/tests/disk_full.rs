//! A full disk under the directory's name database: registrations are refused with UNAVAILABLE
//! and health says NOT_SERVING while it lasts, and both come back by themselves once space
//! returns, without a restart. Mounts a 4 MiB tmpfs, so it needs root (CI runs as root).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use svs_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::TestDirectory;
use svs_common::identity;
use svs_common::proto::directory::directory_client::DirectoryClient;
use svs_common::proto::directory::{GetChallengeRequest, RegisterRequest};
use svs_common::rsa::PrivateKey;
use tonic::transport::Channel;

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn register(
    client: &mut DirectoryClient<Channel>,
    key: &PrivateKey,
    name: &str,
) -> Result<(), tonic::Status> {
    let spki = identity::public_key_der(&key.to_public_key());
    let issued = client
        .get_challenge(GetChallengeRequest {
            name: name.into(),
            public_key_der: spki.clone().into(),
        })
        .await?
        .into_inner();
    let signature =
        svs_common::registration::sign(key, &issued.service_id, name, &spki, &issued.challenge)
            .unwrap();
    client
        .register(RegisterRequest {
            name: name.into(),
            public_key_der: spki.into(),
            challenge: issued.challenge,
            signature: signature.into(),
        })
        .await?;
    Ok(())
}

/// Fills the file system holding `dir` until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        if file
            .write_all(&chunk)
            .and_then(|_| file.sync_all())
            .is_err()
        {
            break;
        }
    }
    // Whatever is left below a chunk goes too.
    while file.write_all(&[0u8; 512]).is_ok() && file.sync_all().is_ok() {}
    path
}

#[tokio::test]
async fn a_full_disk_is_not_serving_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _mount = Mount::tmpfs(&data.join("directory"), "4m");
    let dir = TestDirectory::start(
        &data,
        &[
            "--open-call-rate",
            "100000",
            "--open-call-burst",
            "100000",
            "--max-new-names-per-address-per-hour",
            "100000",
        ],
    )
    .await;
    let channel = svs_common::client::connect(&dir.url, Some(&dir.ca))
        .await
        .unwrap();
    let mut client = DirectoryClient::new(channel);
    let key = identity::generate(2048).unwrap();
    register(&mut client, &key, "before").await.unwrap();

    let filler = fill(&data.join("directory"));
    let mut refused = None;
    for n in 0..3000 {
        if let Err(status) = register(&mut client, &key, &format!("n{n}")).await {
            refused = Some((n, status));
            break;
        }
    }
    let (n, status) = refused.expect("a registration failed once the disk was full");
    println!("registration {n} after the disk filled was refused: {status:?}");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("name database"), "{status:?}");
    // Health follows within the sweeper's second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match svs_common::client::health_check(&dir.url, Some(&dir.ca), "").await {
            Err(e) if e.to_string().contains("NOT_SERVING") => break,
            _ if Instant::now() > deadline => panic!("health never said NOT_SERVING"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while svs_common::client::health_check(&dir.url, Some(&dir.ca), "")
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "SERVING again once space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    register(&mut client, &key, "after").await.unwrap();
    // What was bound before the failure is still bound: another key cannot take it.
    let other = identity::generate(2048).unwrap();
    let err = register(&mut client, &other, "before").await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::PermissionDenied | tonic::Code::AlreadyExists
        ),
        "{err:?}"
    );
    dir.stop().await;
}
