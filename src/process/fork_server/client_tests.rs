//! Unit tests of the parent's handle: what it makes of the server's reports.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;

use super::*;

/// A handle on a stand-in "server": a process of our own that `end` may kill.
fn stand_in() -> (Child, ForkServer) {
    let child = Command::new("sleep").arg("60").spawn().unwrap();
    let z = ForkServer {
        pid: child.id(),
        owner: Owner::current(),
        requests: Mutex::new(None),
        table: Mutex::new(ReportTable { alive: true, ..ReportTable::default() }),
        cond: Condvar::new(),
    };
    (child, z)
}

#[test]
fn reports_that_answer_nothing_asked_are_garbage() {
    let (mut child, z) = stand_in();
    let token = z.next_token().unwrap();
    assert!(!z.record(Report::Spawned { token: token + 1, pid: 100 }), "a token never asked");
    assert!(!z.record(Report::Spawned { token, pid: -5 }), "a negative pid");
    assert!(!z.record(Report::Spawned { token, pid: 0 }), "pid 0");
    assert!(!z.record(Report::Exited { pid: 100, code: 0 }), "the exit of a child never reported");
    assert!(z.record(Report::Spawned { token, pid: 100 }));
    assert!(!z.record(Report::Spawned { token, pid: 101 }), "a token answered twice");
    let again = z.next_token().unwrap();
    assert!(!z.record(Report::Spawned { token: again, pid: 100 }), "a pid reported twice");
    assert!(z.record(Report::SpawnFailed { token: again, errno: i32::MIN }));
    assert_eq!(z.wait_token(again).unwrap_err().raw_os_error(), Some(libc::EIO), "a nonsense errno is EIO");
    assert!(z.record(Report::Signaled { pid: 100, signal: i32::MAX }));
    assert!(!z.record(Report::Exited { pid: 100, code: 0 }), "an exit reported twice");
    assert_eq!(z.wait_exit(100, Duration::MAX), ExitStatus::Signaled { signal: i32::MAX });
    assert_eq!(z.wait_exit(100, Duration::MAX), ExitStatus::Unknown, "handed out once; no wait");
    z.end();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
}

#[test]
fn a_server_that_sends_garbage_is_dead_and_nobody_hangs() {
    for garbage in [
        Report::Spawned { token: 999, pid: 7 }.encode(),
        [0xff; REPORT_LEN],
        [0; REPORT_LEN],
        Report::Exited { pid: i32::MIN, code: 1 }.encode(),
    ] {
        let (mut child, z) = stand_in();
        let z = Arc::new(z);
        let token = z.next_token().unwrap();
        let waiter = {
            let z = Arc::clone(&z);
            std::thread::spawn(move || z.wait_token(token))
        };
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut write = File::from(write);
        write.write_all(&garbage).unwrap();
        write.write_all(&Report::Spawned { token, pid: 8 }.encode()).unwrap();
        z.read_reports(&mut File::from(read));
        z.end();
        assert!(waiter.join().unwrap().is_err(), "the request behind the garbage fails, at once");
        assert!(!z.is_usable());
        assert_eq!(z.wait_exit(8, Duration::MAX), ExitStatus::Unknown);
        assert_eq!(child.wait().unwrap().signal(), Some(9), "the server is killed");
    }
}

#[test]
fn a_truncated_report_is_the_end() {
    let (mut child, z) = stand_in();
    let (read, write) = nix::unistd::pipe().unwrap();
    File::from(write).write_all(&Report::Exited { pid: 3, code: 0 }.encode()[..7]).unwrap();
    z.read_reports(&mut File::from(read));
    z.end();
    assert!(z.next_token().is_err());
    assert_eq!(child.wait().unwrap().signal(), Some(9));
}
