//! The `ecsd` command as a user meets it: start-up errors that say what failed and what to do,
//! `--listen` names that resolve, settings files, and the log lines a server writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn ecsd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecsd"));
    command
        .env_remove("ECSD_LOG")
        .env_remove("ECSD_LISTEN")
        .env_remove("ECSD_CONFIG");
    command
}

/// A server started with `args`, once it has printed its address.
struct Serving {
    child: Child,
    address: String,
}

impl Serving {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serving {
        let mut command = ecsd();
        command
            .arg("serve")
            .args(["--data-dir", dir.join("data").to_str().unwrap()])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("ecsd starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("ecsd listening on http://")
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Serving { child, address }
    }

    /// An unsigned ListClusters: refused, and logged.
    fn call_unsigned(&self) -> String {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.ListClusters\r\n\
             Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            self.address
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// Stops the server and returns what it wrote to stderr.
    fn stop(self) -> String {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let output = self.child.wait_with_output().unwrap();
        String::from_utf8(output.stderr).unwrap()
    }
}

fn run(command: &mut Command) -> Output {
    command.output().expect("ecsd runs")
}

#[test]
fn a_taken_address_names_the_address_and_the_option_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let first = Serving::start(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    let out = run(ecsd()
        .args(["serve", "--listen", &first.address, "--data-dir"])
        .arg(dir.path().join("other")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {}", first.address)),
        "{stderr}"
    );
    assert!(
        stderr.contains("already in use") && stderr.contains("--listen"),
        "{stderr}"
    );
    first.stop();
}

#[test]
fn a_data_folder_another_server_uses_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let first = Serving::start(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    let mut second = ecsd()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ecsd starts");
    // It gives up after the store's lock wait (5 s); one that serves the folder too never ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second server serves the same data folder");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    // The first server still answers.
    assert!(first.call_unsigned().starts_with("HTTP/1.1 "));
    first.stop();
}

#[test]
fn listen_addresses_resolve_like_any_servers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serving::start(dir.path(), &["--listen", "localhost:0"], &[]);
    assert!(
        server.address.starts_with("127.0.0.1:") || server.address.starts_with("[::1]:"),
        "{}",
        server.address
    );
    server.stop();
    let out = run(ecsd()
        .args(["serve", "--listen", "no-such-host.invalid:80", "--data-dir"])
        .arg(dir.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on no-such-host.invalid:80"), "{stderr}");
}

#[test]
fn store_and_credentials_failures_say_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(ecsd()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "postgres://postgres@127.0.0.1:1/nowhere",
            "--data-dir",
        ])
        .arg(dir.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach PostgreSQL at 127.0.0.1:1, database \"nowhere\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("Connection refused"),
        "the cause is the server's own: {stderr}"
    );

    let missing = dir.path().join("missing.toml");
    let out = run(ecsd()
        .args(["serve", "--listen", "127.0.0.1:0", "--credentials"])
        .arg(&missing)
        .arg("--data-dir")
        .arg(dir.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot use the credentials file {}", missing.display())),
        "{stderr}"
    );
}

#[test]
fn a_settings_file_sets_options_that_the_command_line_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ecsd.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\nno_request_log = true\nregion = [\"eu-west-1\"]\n",
    )
    .unwrap();
    let server = Serving::start(
        dir.path(),
        &["--config", file.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_ne!(server.address, "127.0.0.1:1", "the command line wins over the file");
    server.call_unsigned();
    let stderr = server.stop();
    assert!(
        !stderr.contains("ecsd::requests"),
        "no_request_log from the file applies: {stderr}"
    );

    std::fs::write(&file, "listne = \"127.0.0.1:0\"\n").unwrap();
    let out = run(ecsd().args(["serve", "--config"]).arg(&file));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unknown key 'listne'"), "{stderr}");
}

#[test]
fn every_call_is_logged_once_with_its_operation_even_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serving::start(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    let answer = server.call_unsigned();
    assert!(answer.contains("MissingAuthenticationTokenException"), "{answer}");
    let stderr = server.stop();
    assert!(
        !stderr.contains('\u{1b}'),
        "no colours when stderr is no terminal: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("ecsd::requests")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    for field in [
        "operation=\"ListClusters\"",
        "status=403",
        "code=\"MissingAuthenticationTokenException\"",
        "micros=",
        "request_id=",
    ] {
        assert!(lines[0].contains(field), "{field} in {}", lines[0]);
    }
}

#[test]
fn json_logs_are_one_object_a_line_and_the_level_filters_ecsd_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serving::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        &[("ECSD_LOG", "debug")],
    );
    server.call_unsigned();
    let stderr = server.stop();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["target"] == "ecsd::requests")
        .expect("the call is logged");
    assert_eq!(request["operation"], "ListClusters");
    assert_eq!(request["status"], 403);
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "DEBUG" && l["target"] == "ecsd::server"),
        "debug lines of ecsd's own: {stderr}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"] != "DEBUG" || l["target"].as_str().unwrap().starts_with("ecsd")),
        "a bare level leaves the libraries at warn: {stderr}"
    );

    let quiet = Serving::start(dir.path(), &["--listen", "127.0.0.1:0"], &[("ECSD_LOG", "warn")]);
    quiet.call_unsigned();
    assert!(
        !quiet.stop().contains("ecsd::requests"),
        "ECSD_LOG=warn leaves out INFO lines"
    );
}

#[test]
fn every_option_says_what_it_does() {
    for command in [
        &["serve", "--help"][..],
        &["agent", "--help"],
        &["events", "tail", "--help"],
    ] {
        let out = run(ecsd().args(command));
        let help = String::from_utf8(out.stdout).unwrap();
        for line in help.lines().filter(|l| l.trim_start().starts_with("--")) {
            let described = line
                .trim_start()
                .split_once("  ")
                .is_some_and(|(_, text)| !text.trim().is_empty());
            // Long option names put their text on the next line; those lines end with the name.
            let next_line = help.lines().skip_while(|l| *l != line).nth(1).unwrap_or_default();
            assert!(
                described || next_line.starts_with("          "),
                "{command:?}: {line} has no help text"
            );
        }
    }
}
