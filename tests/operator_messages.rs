//! Messages a hospital's IT staff can act on, over a real coordinator: a plain-http coordinator URL, a wrong
//! `server_name`, and private keys readable by other users.

mod support;

use cohort_client::node::Session;
use std::time::Duration;
use support::Fixture;

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_readable_by_others_are_refused_naming_the_file_mode_and_fix() {
    use std::os::unix::fs::PermissionsExt;
    let set_mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let fx = Fixture::new(&["hospital-a"], 1);

    // The coordinator's TLS key.
    let key = fx.coordinator.tls.key.clone();
    set_mode(&key, 0o644);
    let Err(err) = cohort_coordinator::Coordinator::bind(&fx.coordinator).await else {
        panic!("the coordinator bound with a key readable by others");
    };
    let said = err.to_string();
    assert!(said.contains(&format!("{} has mode 0644", key.display())), "{said}");
    assert!(said.contains(&format!("chmod 600 {}", key.display())), "{said}");
    assert!(!fx.coordinator.data_dir.exists(), "the refused coordinator touched its data directory");
    set_mode(&key, 0o600);
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let server = tokio::spawn(coordinator.run(std::future::pending()));

    // A hospital's TLS key, readable by its group.
    let files = fx.issue("hospital-a");
    let config = fx.client("hospital-a", &files, 0, 1, addr);
    set_mode(&files.key, 0o640);
    let said = Session::connect(&config, Duration::from_secs(10)).await.unwrap_err().to_string();
    assert!(said.contains(&format!("{} has mode 0640", files.key.display())), "{said}");
    assert!(said.contains(&format!("chmod 600 {}", files.key.display())), "{said}");
    // 0400 is narrower than 0600, and fine.
    set_mode(&files.key, 0o400);
    Session::connect(&config, Duration::from_secs(10)).await.unwrap();
    server.abort();
}
