fn main() {
    print!("{}", semantic_router::api::crds_yaml().unwrap());
}
