//! IPIP needs the `ipip` module, which this host kernel lacks: the test boots Debian's kernel
//! under qemu and runs `vm/guest-ipip.sh` there with the `tabby-felix` binary (IPIP Always and
//! CrossSubnet, three nodes, IP-in-IP seen on the underlay). About 20–30 s; the first run also
//! downloads the kernel package (~70 MB) into `TABBY_VM_CACHE` (default /var/tmp/tabby-vm).
//! Needs root and qemu-system-x86_64 (`.ci/run` installs it); without them the test fails and
//! says so, rather than passing silently. `TABBY_SKIP_VM=1` skips it on purpose.

use std::process::Command;

#[test]
fn ipip_always_and_cross_subnet_in_a_vm() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let qemu = Command::new("sh")
        .args(["-c", "command -v qemu-system-x86_64"])
        .output()
        .is_ok_and(|o| o.status.success());
    if std::env::var_os("TABBY_SKIP_VM").is_some() {
        eprintln!("TABBY_SKIP_VM is set: skipping the IPIP VM test");
        return;
    }
    assert!(
        root && qemu,
        "the IPIP VM test needs root and qemu-system-x86_64 (root: {root}, qemu: {qemu}); \
         .ci/run installs qemu-system-x86 from bookworm-backports, or set TABBY_SKIP_VM=1"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/vm/run-ipip-vm.sh");
    let out = Command::new(script)
        .arg(env!("CARGO_BIN_EXE_tabby-felix"))
        .output()
        .expect("running the VM harness");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && console.contains("FELIX-IPIP-RESULT: PASS"),
        "IPIP VM test failed:\n{console}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
