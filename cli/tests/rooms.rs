//! `svs room` with the real binary against a real directory over TLS: four devices of three
//! people (alice on two, each its own MLS member) make a room, read and write in it, and a
//! removed person reads nothing said after; mistakes get a sentence. Then a room across two
//! cluster replicas on a real nats-server, with two members changing it at once.
#![allow(clippy::unwrap_used)]

mod support;

use support::run::svs;

use std::path::Path;
use support::TestDirectory;

async fn ok(dir: &TestDirectory, home: &Path, name: &str, args: &[&str]) -> (String, String) {
    let (ok, out, err) = svs(dir, home, name, args).await;
    assert!(ok, "svs {args:?} as {name} failed:\n{out}\n{err}");
    (out, err)
}

/// The texts of the JSON message lines `svs room read --json` printed.
fn texts(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "message")
        .map(|v| {
            format!(
                "{}: {}",
                v["from"].as_str().unwrap(),
                v["text"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_four_devices_reads_and_writes_and_a_removed_person_reads_nothing_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let home = |who: &str| tmp.path().join(who);
    // alice's phone makes her identity; her laptop gets a copy of the identity key (linking a
    // device without copying it is still to come) but makes its own MLS device.
    ok(&dir, &home("phone"), "alice", &["room", "list"]).await;
    std::fs::create_dir_all(home("laptop").join("keys")).unwrap();
    std::fs::copy(
        home("phone").join("keys/alice.pem"),
        home("laptop").join("keys/alice.pem"),
    )
    .unwrap();
    for (who, name) in [("laptop", "alice"), ("bob", "bob"), ("carol", "carol")] {
        let (_, err) = ok(&dir, &home(who), name, &["room", "list"]).await;
        assert!(err.contains("in no room yet"), "{err}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home("bob").join("mls/bob.device"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the device state is private");

    let (out, _) = ok(
        &dir,
        &home("phone"),
        "alice",
        &["room", "create", "movie", "--with", "bob,carol"],
    )
    .await;
    assert!(out.starts_with("created room movie with "), "{out}");
    assert_eq!(
        out.matches("alice/").count(),
        1,
        "the laptop is added: {out}"
    );
    assert!(out.contains("bob/") && out.contains("carol/"), "{out}");

    let (out, err) = ok(&dir, &home("bob"), "bob", &["room", "list"]).await;
    assert!(err.contains("alice added you"), "{err}");
    assert!(err.contains("is called movie"), "{err}");
    assert!(out.starts_with("movie  (epoch 1)"), "{out}");
    assert_eq!(out.matches('/').count(), 4, "four member devices: {out}");
    assert!(!err.contains("NOT certified"), "{err}");

    // Both pinned each other's key on the way: their safety numbers agree (and differ from
    // carol's with alice).
    let safety = |out: &str| -> String {
        out.lines()
            .skip_while(|l| !l.starts_with("safety number"))
            .skip(1)
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (alice_view, _) = ok(
        &dir,
        &home("phone"),
        "alice",
        &["fingerprint", "bob", "--qr"],
    )
    .await;
    let (bob_view, _) = ok(&dir, &home("bob"), "bob", &["fingerprint", "alice"]).await;
    ok(&dir, &home("carol"), "carol", &["room", "list"]).await;
    let (carol_view, _) = ok(&dir, &home("carol"), "carol", &["fingerprint", "alice"]).await;
    assert_eq!(
        safety(&alice_view).split_whitespace().count(),
        12,
        "{alice_view}"
    );
    assert_eq!(safety(&alice_view), safety(&bob_view));
    assert_ne!(safety(&carol_view), safety(&bob_view));
    assert!(
        alice_view.contains('▀') || alice_view.contains('▄'),
        "a QR code: {alice_view}"
    );

    ok(
        &dir,
        &home("phone"),
        "alice",
        &["room", "send", "movie", "hello", "everyone"],
    )
    .await;
    // Catching up before it sends, bob's `send` shows what was said meanwhile (on stderr).
    let (_, err) = ok(
        &dir,
        &home("bob"),
        "bob",
        &["room", "send", "movie", "hi alice"],
    )
    .await;
    assert!(err.contains("[movie] alice: hello everyone"), "{err}");
    for (who, name, expect) in [
        (
            "laptop",
            "alice",
            vec!["alice: hello everyone", "bob: hi alice"],
        ),
        (
            "carol",
            "carol",
            vec!["alice: hello everyone", "bob: hi alice"],
        ),
        ("bob", "bob", vec![]),
        ("phone", "alice", vec!["bob: hi alice"]),
    ] {
        let (out, _) = ok(&dir, &home(who), name, &["room", "read", "--json"]).await;
        assert_eq!(texts(&out), expect, "{who} reads");
        // Read once: a second read prints nothing new.
        let (again, _) = ok(&dir, &home(who), name, &["room", "read", "--json"]).await;
        assert!(texts(&again).is_empty(), "{who} read twice: {again}");
    }

    // carol is removed; what is said next reaches bob and the laptop, not her.
    let (out, _) = ok(
        &dir,
        &home("bob"),
        "bob",
        &["room", "remove", "movie", "carol"],
    )
    .await;
    assert!(out.starts_with("removed carol/"), "{out}");
    ok(
        &dir,
        &home("phone"),
        "alice",
        &["room", "send", "movie", "carol cannot read this"],
    )
    .await;
    let (out, err) = ok(&dir, &home("carol"), "carol", &["room", "read"]).await;
    assert!(!out.contains("carol cannot read this"), "{out}");
    assert!(
        err.contains("removed this device") || err.contains("no longer a member"),
        "{err}"
    );
    let (out, _) = ok(&dir, &home("carol"), "carol", &["room", "list"]).await;
    assert!(!out.contains("movie"), "{out}");
    let (out, err) = ok(
        &dir,
        &home("laptop"),
        "alice",
        &["room", "read", "--count", "1", "--timeout", "20", "--json"],
    )
    .await;
    assert_eq!(texts(&out), ["alice: carol cannot read this"], "{err}");
    assert!(
        out.contains("bob/") && out.contains("removed carol/"),
        "the laptop sees who removed whom: {out}"
    );

    // `svs listen --rooms` prints room lines beside direct messages; `svs send --room` writes.
    let (out, _) = ok(&dir, &home("bob"), "bob", &["room", "read"]).await;
    assert!(
        out.contains("[movie] alice: carol cannot read this"),
        "{out}"
    );
    let listener = tokio::process::Command::new(env!("CARGO_BIN_EXE_svs"))
        .args(["listen", "--rooms", "--count", "2", "--timeout", "60"])
        .env("SVS_DIRECTORY", &dir.url)
        .env("SVS_CA", &dir.ca)
        .env("SVS_HOME", home("bob"))
        .env("SVS_NAME", "bob")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (out, _) = ok(
        &dir,
        &home("phone"),
        "alice",
        &["send", "--room", "movie", "via", "send"],
    )
    .await;
    assert_eq!(out.trim(), "sent to movie");
    ok(
        &dir,
        &home("phone"),
        "alice",
        &["send", "--to", "bob", "a direct one"],
    )
    .await;
    let listened = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        listener.wait_with_output(),
    )
    .await
    .expect("listen --count 2 ends")
    .unwrap();
    let out = String::from_utf8_lossy(&listened.stdout);
    assert!(
        listened.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&listened.stderr)
    );
    assert!(out.contains("[movie] alice: via send"), "{out}");
    assert!(out.contains("a direct one"), "{out}");

    // Fresh keys after N messages: the send is followed by a commit updating the phone's leaf.
    let epoch = |out: &str| -> u64 {
        let at = out.find("(epoch ").unwrap() + "(epoch ".len();
        out[at..].split(')').next().unwrap().parse().unwrap()
    };
    let (before, _) = ok(&dir, &home("phone"), "alice", &["room", "list"]).await;
    ok(
        &dir,
        &home("phone"),
        "alice",
        &[
            "room",
            "--update-after-messages",
            "1",
            "send",
            "movie",
            "fresh keys",
        ],
    )
    .await;
    let (after, _) = ok(&dir, &home("phone"), "alice", &["room", "list"]).await;
    // (The earlier messages also counted: the send may update before it too.)
    assert!(epoch(&after) > epoch(&before), "{before}\n{after}");
    ok(
        &dir,
        &home("phone"),
        "alice",
        &[
            "room",
            "--update-after-messages",
            "1",
            "send",
            "movie",
            "and again",
        ],
    )
    .await;
    let (again, _) = ok(&dir, &home("phone"), "alice", &["room", "list"]).await;
    assert_eq!(epoch(&again), epoch(&after) + 1, "{after}\n{again}");
    let (out, err) = ok(&dir, &home("bob"), "bob", &["room", "read"]).await;
    assert!(
        out.contains("[movie] alice: fresh keys") && out.contains("[movie] alice: and again"),
        "{out}"
    );
    assert!(err.contains("updated their keys"), "{err}");

    // alice's laptop is lost: her phone removes it from the directory and from the room.
    let (out, _) = ok(&dir, &home("phone"), "alice", &["devices"]).await;
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(out.matches("(this device)").count(), 1, "{out}");
    let laptop = out.lines().find(|l| !l.contains("this device")).unwrap()[..8].to_string();
    let (okay, _, err) = svs(&dir, &home("phone"), "alice", &["devices", "remove", "zz"]).await;
    assert!(
        !okay && err.contains("no device whose id starts with"),
        "{err}"
    );
    let (out, _) = ok(
        &dir,
        &home("phone"),
        "alice",
        &["devices", "remove", &laptop],
    )
    .await;
    assert!(
        out.contains(&format!("removed alice/{laptop} from room movie")),
        "{out}"
    );
    assert!(out.contains("the directory no longer lists"), "{out}");
    ok(
        &dir,
        &home("phone"),
        "alice",
        &["room", "send", "movie", "after the laptop"],
    )
    .await;
    let (okay, out, err) = svs(&dir, &home("laptop"), "alice", &["room", "read"]).await;
    assert!(!okay && !out.contains("after the laptop"), "{out}");
    assert!(err.contains("was removed by its owner"), "{err}");
    let (out, _) = ok(&dir, &home("phone"), "alice", &["devices"]).await;
    assert_eq!(out.lines().count(), 1, "{out}");

    // Mistakes get a sentence.
    let (okay, _, err) = svs(&dir, &home("bob"), "bob", &["room", "send", "nosuch", "x"]).await;
    assert!(!okay && err.contains("no room called \"nosuch\""), "{err}");
    let (okay, _, err) = svs(
        &dir,
        &home("bob"),
        "bob",
        &["room", "create", "other", "--with", "nobody-here"],
    )
    .await;
    assert!(
        !okay && err.contains("nobody is registered as nobody-here"),
        "{err}"
    );
    svs(&dir, &home("dave"), "dave", &["who"]).await;
    let (okay, _, err) = svs(
        &dir,
        &home("bob"),
        "bob",
        &["room", "create", "other", "--with", "dave"],
    )
    .await;
    assert!(!okay && err.contains("dave has no MLS device yet"), "{err}");
    let (okay, _, err) = svs(
        &dir,
        &home("bob"),
        "bob",
        &["room", "create", "has space", "--with", "alice"],
    )
    .await;
    assert!(!okay && err.contains("room name"), "{err}");

    // The directory's database holds none of it in the clear.
    dir.stop().await;
    let stored = std::fs::read(tmp.path().join("data/directory/names.redb")).unwrap();
    for plaintext in [
        "hello everyone",
        "hi alice",
        "carol cannot read this",
        "movie",
    ] {
        assert!(
            !stored
                .windows(plaintext.len())
                .any(|w| w == plaintext.as_bytes()),
            "{plaintext:?} is readable in the directory's database"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_two_cluster_replicas_and_concurrent_changes_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = support::NatsServer::start(&tmp.path().join("nats")).await;
    let mut replicas = TestDirectory::replicas(tmp.path(), &nats, 2).await;
    let (two, one) = (replicas.pop().unwrap(), replicas.pop().unwrap());
    let home = |who: &str| tmp.path().join(who);
    // alice and carol on replica one, bob and dave on replica two.
    for (dir, who) in [
        (&one, "alice"),
        (&two, "bob"),
        (&one, "carol"),
        (&two, "dave"),
    ] {
        ok(dir, &home(who), who, &["room", "list"]).await;
    }
    let (out, _) = ok(
        &one,
        &home("alice"),
        "alice",
        &["room", "create", "movie", "--with", "bob"],
    )
    .await;
    assert!(out.starts_with("created room movie with "), "{out}");
    ok(
        &one,
        &home("alice"),
        "alice",
        &["room", "send", "movie", "across replicas"],
    )
    .await;
    let (out, _) = ok(&two, &home("bob"), "bob", &["room", "read", "--json"]).await;
    assert!(out.contains("alice added you"), "{out}");
    assert_eq!(texts(&out), ["alice: across replicas"]);

    // bob follows the room through replica two, reading it only when told something changed:
    // alice's line through replica one reaches him by the hint crossing replicas.
    let mut listen = tokio::process::Command::new(env!("CARGO_BIN_EXE_svs"))
        .args(["listen", "--rooms", "--count", "2", "--timeout", "60"])
        .env("SVS_DIRECTORY", &two.url)
        .env("SVS_CA", &two.ca)
        .env("SVS_HOME", home("bob"))
        .env("SVS_NAME", "bob")
        .env("SVS_ROOMS_POLL_SECS", "600")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut heard =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(listen.stdout.take().unwrap()));
    ok(
        &one,
        &home("alice"),
        "alice",
        &["room", "send", "movie", "first"],
    )
    .await;
    assert_eq!(
        heard.next_line().await.unwrap().as_deref(),
        Some("[movie] alice: first")
    );
    ok(
        &one,
        &home("alice"),
        "alice",
        &["room", "send", "movie", "second"],
    )
    .await;
    assert_eq!(
        heard.next_line().await.unwrap().as_deref(),
        Some("[movie] alice: second"),
        "the hint crossed replicas"
    );
    assert!(listen.wait().await.unwrap().success());

    // alice (through one) adds carol while bob (through two) adds dave: both commits are for
    // the same epoch, the directory takes one, the other svs applies it and commits again.
    let (alice_home, bob_home) = (home("alice"), home("bob"));
    let (alice_add, bob_add) = tokio::join!(
        svs(
            &one,
            &alice_home,
            "alice",
            &["room", "add", "movie", "carol"]
        ),
        svs(&two, &bob_home, "bob", &["room", "add", "movie", "dave"]),
    );
    assert!(alice_add.0, "{alice_add:?}");
    assert!(bob_add.0, "{bob_add:?}");
    ok(
        &two,
        &home("dave"),
        "dave",
        &["room", "send", "movie", "dave is in"],
    )
    .await;
    let mut epochs = Vec::new();
    for (dir, who) in [
        (&one, "alice"),
        (&two, "bob"),
        (&one, "carol"),
        (&two, "dave"),
    ] {
        let (out, _) = ok(dir, &home(who), who, &["room", "read", "--json"]).await;
        if who != "dave" {
            assert!(
                texts(&out).contains(&"dave: dave is in".to_string()),
                "{who} reads dave: {out}"
            );
        }
        let (out, _) = ok(dir, &home(who), who, &["room", "list"]).await;
        assert!(out.starts_with("movie  (epoch "), "{who}: {out}");
        assert_eq!(
            out.matches('/').count(),
            4,
            "{who} sees four devices: {out}"
        );
        epochs.push(out.lines().next().unwrap().to_string());
    }
    assert!(
        epochs.iter().all(|e| e == &epochs[0]),
        "one history: {epochs:?}"
    );
}

/// How long a screen may take to show something.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `svs chat` (full screen, or `--plain`) as `name` in a pseudo-terminal, shared with the
/// blocking waits that run beside the runtime. It reads rooms on the directory's hints only.
fn chat_app(dir: &TestDirectory, home: &Path, name: &str, plain: bool) -> SharedApp {
    let (ca, home) = (dir.ca.display().to_string(), home.display().to_string());
    let mut args = vec![
        "--directory",
        &dir.url,
        "--ca",
        &ca,
        "--name",
        name,
        "--home",
        &home,
        "--key-bits",
        "2048",
        "chat",
    ];
    if plain {
        args.push("--plain");
    }
    // Rooms are read only when the directory hints that something changed (or after ten
    // minutes): what others say can arrive in time only through the hints.
    let app = support::pty::PtyApp::spawn(&args, &[("SVS_ROOMS_POLL_SECS", "600")], 30, 120);
    std::sync::Arc::new(std::sync::Mutex::new(app))
}

type SharedApp = std::sync::Arc<std::sync::Mutex<support::pty::PtyApp>>;

/// Waits (off the runtime) until the screen shows `text`.
async fn shows(app: &SharedApp, text: impl Into<String>) {
    let (app, text) = (app.clone(), text.into());
    tokio::task::spawn_blocking(move || {
        app.lock().unwrap().wait_for(&text, LIMIT);
    })
    .await
    .unwrap();
}

fn type_keys(app: &SharedApp, keys: &str) {
    app.lock().unwrap().type_keys(keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_chat_makes_a_room_writes_in_it_and_shows_what_others_say() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let home = |who: &str| tmp.path().join(who);
    ok(&dir, &home("bob"), "bob", &["room", "list"]).await;
    let alice = chat_app(&dir, &home("alice"), "alice", true);
    shows(&alice, "type /help for commands").await;
    type_keys(&alice, "/room create movie bob\r");
    shows(&alice, "* created room movie with bob/").await;
    type_keys(&alice, "#movie popcorn is ready\r");
    let (out, _) = ok(&dir, &home("bob"), "bob", &["room", "read", "--json"]).await;
    assert!(out.contains("alice added you"), "{out}");
    assert_eq!(texts(&out), ["alice: popcorn is ready"]);
    ok(
        &dir,
        &home("bob"),
        "bob",
        &["room", "send", "movie", "on my way"],
    )
    .await;
    shows(&alice, "[movie] bob: on my way").await;
    type_keys(&alice, "/rooms\r");
    shows(&alice, "#movie  epoch 1  alice (you), bob (not verified)").await;
    // The room code and the safety number are the same on both sides.
    let (out, _) = ok(&dir, &home("bob"), "bob", &["room", "list"]).await;
    let code = out.split("· code ").nth(1).unwrap().trim().to_string();
    assert_eq!(code.len(), 11, "{out}");
    shows(&alice, format!("· code {code}")).await;
    type_keys(&alice, "/verify bob\r");
    shows(&alice, "safety number with bob").await;
    let (out, _) = ok(&dir, &home("bob"), "bob", &["verify", "alice"]).await;
    let digits: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert_eq!(digits.len(), 3, "twelve groups of five: {out}");
    for line in digits {
        shows(&alice, line.to_string()).await;
    }
    type_keys(&alice, "#nosuchroom hello\r");
    shows(&alice, "no room").await;
    type_keys(&alice, "/leave movie\r");
    shows(&alice, "* left movie: this device reads nothing more there").await;
    let (_, err) = ok(&dir, &home("bob"), "bob", &["room", "list"]).await;
    assert!(
        err.contains("[movie] alice/") && err.contains(" left"),
        "{err}"
    );
    type_keys(&alice, "/quit\r");
    let exited = {
        let alice = alice.clone();
        tokio::task::spawn_blocking(move || alice.lock().unwrap().wait_exit(LIMIT).success())
            .await
            .unwrap()
    };
    assert!(exited);
    // The room feed's session ended with the chat: alice is not online any more.
    let (out, _) = ok(&dir, &home("bob"), "bob", &["who"]).await;
    assert!(!out.contains("alice"), "alice left with her chat: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_screen_chat_has_a_conversation_per_room() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let home = |who: &str| tmp.path().join(who);
    ok(&dir, &home("bob"), "bob", &["room", "list"]).await;
    let alice = chat_app(&dir, &home("alice"), "alice", false);
    shows(&alice, "/help lists commands").await;
    type_keys(&alice, "/room create movie bob\r");
    // The room's conversation opens: plain text now goes to the room.
    shows(&alice, "created room movie with bob/").await;
    type_keys(&alice, "plain words go to the room\r");
    shows(&alice, "you: plain words go to the room").await;
    let (out, _) = ok(&dir, &home("bob"), "bob", &["room", "read", "--json"]).await;
    assert_eq!(texts(&out), ["alice: plain words go to the room"]);
    ok(
        &dir,
        &home("bob"),
        "bob",
        &["room", "send", "movie", "reading you"],
    )
    .await;
    shows(&alice, "bob: reading you").await;
    let tabs = alice.lock().unwrap().rows()[0].clone();
    assert!(tabs.contains("#movie"), "the room has its tab: {tabs}");
    // With the room's conversation open, the side pane shows the room: its code (the same as
    // bob's) and its members with their trust.
    let (out, _) = ok(&dir, &home("bob"), "bob", &["room", "list"]).await;
    let code = out.split("· code ").nth(1).unwrap().trim().to_string();
    shows(&alice, format!("code {code}")).await;
    shows(&alice, "members (2)").await;
    let pane: Vec<String> = {
        let app = alice.lock().unwrap();
        let cols = app.cols as usize;
        app.rows()
            .iter()
            .map(|r| {
                r.chars()
                    .skip(cols * 3 / 4)
                    .collect::<String>()
                    .trim()
                    .to_string()
            })
            .filter(|r| !r.is_empty())
            .collect()
    };
    let at = pane.iter().position(|r| r.contains("alice")).unwrap();
    assert!(pane[at + 1].contains("you"), "{pane:#?}");
    let at = pane.iter().position(|r| r.contains("bob")).unwrap();
    assert!(pane[at + 1].contains("pinned"), "{pane:#?}");
    type_keys(&alice, "/quit\r");
    let exited = {
        let alice = alice.clone();
        tokio::task::spawn_blocking(move || alice.lock().unwrap().wait_exit(LIMIT).success())
            .await
            .unwrap()
    };
    assert!(exited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_is_removed_by_the_others_and_reads_nothing_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let home = |who: &str| tmp.path().join(who);
    for who in ["alice", "bob", "carol"] {
        ok(&dir, &home(who), who, &["room", "list"]).await;
    }
    ok(
        &dir,
        &home("alice"),
        "alice",
        &["room", "create", "movie", "--with", "bob,carol"],
    )
    .await;
    ok(&dir, &home("carol"), "carol", &["room", "read"]).await;
    let (out, _) = ok(&dir, &home("carol"), "carol", &["room", "leave", "movie"]).await;
    assert!(out.contains("left movie"), "{out}");
    let (_, err) = ok(&dir, &home("carol"), "carol", &["room", "list"]).await;
    assert!(
        err.contains("in no room yet"),
        "carol forgot the room: {err}"
    );
    // bob reads the request and commits carol's removal; alice sees it.
    let (out, _) = ok(&dir, &home("bob"), "bob", &["room", "read", "--json"]).await;
    assert!(out.contains(" left"), "{out}");
    let (_, err) = ok(&dir, &home("alice"), "alice", &["room", "read"]).await;
    assert!(err.contains("removed carol/"), "{err}");
    for who in ["alice", "bob"] {
        let (out, _) = ok(&dir, &home(who), who, &["room", "list"]).await;
        assert_eq!(out.matches('/').count(), 2, "{who}: carol is gone: {out}");
    }
    ok(
        &dir,
        &home("alice"),
        "alice",
        &["room", "send", "movie", "after carol"],
    )
    .await;
    let (out, _) = ok(&dir, &home("bob"), "bob", &["room", "read", "--json"]).await;
    assert_eq!(texts(&out), ["alice: after carol"]);
    let (out, _) = ok(&dir, &home("carol"), "carol", &["room", "read", "--json"]).await;
    assert!(
        texts(&out).is_empty(),
        "carol reads nothing after leaving: {out}"
    );
    let (okay, _, err) = svs(&dir, &home("carol"), "carol", &["room", "leave", "movie"]).await;
    assert!(!okay && err.contains("movie"), "{err}");
}
