fn main() -> std::process::ExitCode {
    assignd::cli::main()
}
