//! The fork server runs the program's own file under the program's name.
//!
//! A binary of its own: while the server forks a child it carries the child's name for a few
//! instructions (so that the child has it from its first instant), so its name can be read
//! reliably only while no other test of the process is starting workers.

use stealpool::ProcessPoolBuilder;

#[test]
fn the_fork_server_runs_this_very_file_under_its_name() {
    use std::os::unix::fs::MetadataExt;
    let pool = ProcessPoolBuilder::new().num_workers(1).build().unwrap();
    let server = pool.fork_server_pid();
    let (theirs, ours) =
        (std::fs::metadata(format!("/proc/{server}/exe")).unwrap(), std::fs::metadata("/proc/self/exe").unwrap());
    assert_eq!((theirs.dev(), theirs.ino()), (ours.dev(), ours.ino()));
    let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm(&server.to_string()), comm("self"));
}
