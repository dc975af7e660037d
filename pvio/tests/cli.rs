//! The `pvio` binary: the demo's table, the read-only demo on an existing
//! image, the commands waiting for hosted mode, and qemu-io / qemu-img
//! against `pvio blkfront --embedded --nbd` (skipped, saying so, when
//! qemu-utils is missing outside CI). No timing assertions: every wait has
//! a generous guard that fails instead of hanging.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PVIO: &str = env!("CARGO_BIN_EXE_pvio");
const GUARD: Duration = Duration::from_secs(60);

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn demo_prints_the_table_with_verify_ok() {
    let o = Command::new(PVIO)
        .args(["demo", "--quiet", "--duration", "1.5"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    println!("{out}\n{err}");
    assert!(o.status.success(), "demo failed: {err}");
    for want in [
        "block random 4 KiB write, QD32",
        "block random 4 KiB read, QD32",
        "block sequential 1 MiB read, QD8",
        "net 64 B frames",
        "net 1500 B frames",
        "IOPS",
        "MiB/s",
        "frames/s",
        "Gbit/s",
        "OK (",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }
    assert!(!out.contains("FAILED"), "{out}");
    assert_eq!(out.lines().last(), Some("verify OK"));
}

#[test]
fn demo_on_an_existing_image_without_allow_writes_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&img, &data).unwrap();
    let o = Command::new(PVIO)
        .args(["demo", "--quiet", "--duration", "1", "--image"])
        .arg(&img)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    println!("{out}\n{err}");
    assert!(o.status.success(), "demo failed: {err}");
    assert!(!out.contains("write, QD32"), "no writes: {out}");
    assert!(out.contains("read-only"), "{out}");
    assert_eq!(out.lines().last(), Some("verify OK"));
    assert!(
        std::fs::read(&img).unwrap() == data,
        "the image is unchanged"
    );
}

#[test]
fn hosted_commands_without_a_daemon_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hv.sock");
    let s = sock.to_str().unwrap();
    for (args, want) in [
        (
            vec![
                "blkback",
                "--hv",
                s,
                "--image",
                "/nonexistent",
                "--read-only",
            ],
            "/nonexistent",
        ),
        (vec!["netback", "--hv", s, "--switch"], "hv.sock.xs"),
        (
            vec!["blkfront", "--hv", s, "--nbd", "unix:/tmp/x.sock"],
            "hv.sock",
        ),
    ] {
        let o = Command::new(PVIO).args(&args).output().unwrap();
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Usage errors are clap's.
    let o = Command::new(PVIO)
        .args(["netback", "--hv", s])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(PVIO)
        .args(["blkfront", "--embedded", "--nbd", "unix:/tmp/x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "--embedded needs --image");
}

// ------------------------------------------------------------ qemu and NBD

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills the server if the test fails before it stops it.
struct Pvio(Option<Child>);

impl Drop for Pvio {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pvio {
    fn export(image: &Path, sock: &Path, log: &Path) -> Pvio {
        let child = Command::new(PVIO)
            .args(["blkfront", "--embedded", "--image"])
            .arg(image)
            .arg("--nbd")
            .arg(format!("unix:{}", sock.display()))
            .env("PVIO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut p = Pvio(Some(child));
        let start = Instant::now();
        while !sock.exists() {
            if let Some(st) = p.0.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "pvio exited ({st}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < GUARD, "no NBD socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// SIGTERM; the process must exit 0 by itself.
    fn terminate(mut self, log: &Path) {
        let mut c = self.0.take().unwrap();
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > GUARD {
                let _ = c.kill();
                panic!("pvio did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(status.success(), "pvio exit {status}: {log}");
        assert!(log.contains("pvio: stopped"), "{log}");
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    let (out, err) = text(&o);
    println!("$ {cmd} {args:?}\n{out}{err}");
    assert!(o.status.success(), "{cmd} {args:?} failed: {out}{err}");
    let all = format!("{out}{err}");
    assert!(
        !all.contains("Pattern verification failed") && !all.contains("error"),
        "{cmd}: {all}"
    );
    out
}

#[test]
fn qemu_io_and_qemu_img_against_the_nbd_export() {
    if !(have("qemu-img") && have("qemu-io")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-img/qemu-io missing under CI (.ci/run installs qemu-utils)"
        );
        println!("SKIPPED: qemu-img or qemu-io missing (apt-get install qemu-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let sock = dir.path().join("nbd.sock");
    let log = dir.path().join("pvio.log");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let url = format!("nbd+unix:///?socket={}", sock.display());

    let p = Pvio::export(&img, &sock, &log);
    let info = run("qemu-img", &["info", "-f", "raw", &url]);
    assert!(info.contains("33554432 bytes"), "{info}");
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &url,
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "read -P 0xab 0 64k",
            "-c",
            "write -P 0x5a 1M 1M",
            "-c",
            "write -P 0x11 31M 3584",
            "-c",
            "write -P 0x22 20M 512",
            "-c",
            "discard 1M 64k",
            "-c",
            "read -P 0 1M 64k",
            "-c",
            "read -P 0x5a 1088k 960k",
            "-c",
            "read -P 0x11 31M 3584",
            "-c",
            "flush",
        ],
    );
    // A second connection sees the same data.
    run(
        "qemu-io",
        &["-f", "raw", "-r", &url, "-c", "read -P 0x22 20M 512"],
    );
    p.terminate(&log);
    assert!(!sock.exists(), "the socket is removed on shutdown");

    // Everything reached the image.
    let d = std::fs::read(&img).unwrap();
    assert!(d[..64 << 10].iter().all(|&b| b == 0xab));
    assert!(d[1 << 20..(1 << 20) + (64 << 10)].iter().all(|&b| b == 0));
    assert!(
        d[(1 << 20) + (64 << 10)..2 << 20]
            .iter()
            .all(|&b| b == 0x5a)
    );
    assert!(d[20 << 20..(20 << 20) + 512].iter().all(|&b| b == 0x22));
    assert!(d[31 << 20..(31 << 20) + 3584].iter().all(|&b| b == 0x11));

    // A fresh export of the image compares identical with the file.
    let p = Pvio::export(&img, &sock, &log);
    let out = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            &url,
            img.to_str().unwrap(),
        ],
    );
    assert!(out.contains("Images are identical"), "{out}");
    p.terminate(&log);
}
