fn main() {
    node::run();
}
