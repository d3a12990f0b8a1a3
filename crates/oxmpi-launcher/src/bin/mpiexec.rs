//! `mpiexec`: start an MPI job on this machine. All the work is in the library.
fn main() {
    std::process::exit(oxmpi_launcher::main_from_env());
}
