//! `tabby`: the CNI network plugin, exec'd by the container runtime for each pod.

fn main() {
    std::process::exit(cni_plugin::cli::main(&cni_plugin::plugin::Tabby));
}
