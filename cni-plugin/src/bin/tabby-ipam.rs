//! `tabby-ipam`: the CNI IPAM plugin over tabby's block IPAM.

fn main() {
    std::process::exit(cni_plugin::cli::main(&cni_plugin::ipam_plugin::TabbyIpam));
}
