//! Process creation and management (MPI-4.1 chapter 11) on the library:
//! `MPI_Comm_spawn_multiple`, `MPI_Comm_get_parent`, ports and
//! `MPI_Comm_accept`/`MPI_Comm_connect`, the name service and
//! `MPI_Comm_join`. The library's launcher starts the new processes
//! (hydra's proxies, Open MPI's prted), so they run on the system-MPI
//! backend as well.
//!
//! Processes of another MPI_COMM_WORLD have no rank in this one: the
//! groups of communicators that reach them hold `UNDEFINED` for them (see
//! `world_ranks_of`), so such communicators cannot name them in
//! `Create_intercomm` or group operations over MPI_COMM_WORLD ranks.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CString};
use std::sync::{Arc, Mutex};

use crate::backend::{CommRef, SpawnCommand};
use crate::error::{Error, Result};

use super::abi::Abi;
use super::comm::{not_implemented, SystemComm};
use super::engine::Core;

/// Room for a port name: MPI_MAX_PORT_NAME is 256 (MPICH) or 1024 (Open
/// MPI, standard ABI).
const PORT_ROOM: usize = 4096;

/// The library's function `f`, or NotImplementedError naming it.
fn need<F: Copy>(f: Option<F>, name: &str) -> Result<F> {
    f.ok_or_else(|| not_implemented(&format!("{name} (the MPI library lacks it)")))
}

/// A Rust string as a C string; an interior NUL is an argument error.
fn c_string(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Arg(format!("{what} contains a NUL character")))
}

/// The C string the library wrote into `buf`.
fn from_c_buf(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Library info objects made from key/value pairs, freed on drop.
struct Infos<'a, A: Abi> {
    core: &'a Core<A>,
    handles: Vec<A::H>,
}

impl<'a, A: Abi> Infos<'a, A> {
    fn new(core: &'a Core<A>) -> Self {
        Infos {
            core,
            handles: Vec::new(),
        }
    }

    /// Adds one info object holding `items` (MPI_INFO_NULL when empty).
    fn push(&mut self, items: &[(String, String)]) -> Result<()> {
        if items.is_empty() {
            self.handles.push(self.core.h.info_null);
            return Ok(());
        }
        let api = &self.core.api;
        let create = need(api.MPI_Info_create, "MPI_Info_create")?;
        let set = need(api.MPI_Info_set, "MPI_Info_set")?;
        let mut info = self.core.h.info_null;
        // SAFETY: `info` is an out-pointer.
        let rc = unsafe { create(&mut info) };
        self.core.check(rc, "MPI_Info_create")?;
        self.handles.push(info);
        for (k, v) in items {
            let (k, v) = (c_string(k, "an info key")?, c_string(v, "an info value")?);
            // SAFETY: an info object made above; NUL-terminated strings.
            let rc = unsafe { set(info, k.as_ptr(), v.as_ptr()) };
            self.core.check(rc, "MPI_Info_set")?;
        }
        Ok(())
    }
}

impl<A: Abi> Drop for Infos<'_, A> {
    fn drop(&mut self) {
        let Some(free) = self.core.api.MPI_Info_free else {
            return;
        };
        for h in &mut self.handles {
            if *h != self.core.h.info_null {
                // SAFETY: an info object made by `push`.
                unsafe { free(h) };
            }
        }
    }
}

/// The C arrays of MPI_Comm_spawn_multiple's root, kept alive together.
struct SpawnArgs {
    _strings: Vec<CString>,
    _argv_arrays: Vec<Vec<*mut c_char>>,
    commands: Vec<*mut c_char>,
    argvs: Vec<*mut *mut c_char>,
    maxprocs: Vec<c_int>,
}

impl SpawnArgs {
    fn new(commands: &[SpawnCommand]) -> Result<SpawnArgs> {
        let mut strings = Vec::new();
        let mut argv_arrays = Vec::new();
        let mut cmds = Vec::new();
        let mut maxprocs = Vec::new();
        for c in commands {
            let cmd = c_string(&c.command, "a command")?;
            cmds.push(cmd.as_ptr() as *mut c_char);
            strings.push(cmd);
            // A NULL-terminated array of arguments (argv[0] excluded).
            let mut argv: Vec<*mut c_char> = Vec::with_capacity(c.args.len() + 1);
            for a in &c.args {
                let a = c_string(a, "an argument")?;
                argv.push(a.as_ptr() as *mut c_char);
                strings.push(a);
            }
            argv.push(std::ptr::null_mut());
            argv_arrays.push(argv);
            maxprocs.push(
                c_int::try_from(c.maxprocs)
                    .map_err(|_| Error::Arg(format!("maxprocs {} is too large", c.maxprocs)))?,
            );
        }
        // The CStrings' and argv vectors' heap buffers do not move when
        // the vectors holding them grow, so the pointers stay valid.
        let argvs = argv_arrays.iter_mut().map(|v| v.as_mut_ptr()).collect();
        Ok(SpawnArgs {
            _strings: strings,
            _argv_arrays: argv_arrays,
            commands: cmds,
            argvs,
            maxprocs,
        })
    }
}

impl<A: Abi> SystemComm<A> {
    /// Wraps an intercommunicator to processes of another MPI_COMM_WORLD.
    fn adopt_dynamic(&self, h: A::H) -> Result<CommRef> {
        if h == self.core.h.comm_null {
            return Err(Error::Intern(
                "the MPI library gave no intercommunicator".into(),
            ));
        }
        Ok(Arc::new(SystemComm::wrap(self.core.clone(), h, "", true)?))
    }

    fn check_intra(&self, what: &str) -> Result<()> {
        if self.inter {
            return Err(Error::Comm(format!("{what} needs an intracommunicator")));
        }
        Ok(())
    }

    /// Runs `check` (the root's argument checks) at `root` and tells every
    /// member how it went: these calls are collective, so an error at the
    /// root must end the call everywhere, not leave the others in the
    /// library's call waiting for it. None away from the root.
    fn root_checked<T>(&self, root: i32, check: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        let mine = (self.rank == root).then(check);
        let verdict = mine.as_ref().map(|r| match r {
            Ok(_) => vec![0u8],
            Err(e) => {
                let kind = if matches!(e, Error::NotImplemented(_)) {
                    2
                } else {
                    1
                };
                let mut v = vec![kind];
                v.extend(e.class().to_le_bytes());
                v.extend(e.to_string().into_bytes());
                v
            }
        });
        let got = crate::backend::Communicator::bcast_bytes(self, verdict, root)?;
        match (got.first(), mine) {
            (Some(0), mine) => mine.transpose(),
            (_, Some(Err(e))) => Err(e),
            (Some(&kind), None) if got.len() >= 5 => {
                let class = i32::from_le_bytes(got[1..5].try_into().expect("4 bytes"));
                let message = String::from_utf8_lossy(&got[5..]).into_owned();
                Err(if kind == 2 {
                    Error::NotImplemented(message)
                } else {
                    Error::Mpi { class, message }
                })
            }
            _ => Err(Error::Intern("malformed verdict of the root".into())),
        }
    }

    /// MPI_Comm_spawn_multiple; `commands` is significant at `root` only.
    pub(super) fn spawn_procs(
        &self,
        root: i32,
        commands: Option<&[SpawnCommand]>,
    ) -> Result<CommRef> {
        self.check_intra("Spawn")?;
        self.check_root(root)?;
        let spawn = need(
            self.core.api.MPI_Comm_spawn_multiple,
            "MPI_Comm_spawn_multiple",
        )?;
        let mut infos = Infos::new(&self.core);
        let args = self.root_checked(root, || match commands {
            Some(cmds) if !cmds.is_empty() => {
                for c in cmds {
                    infos.push(&c.info)?;
                }
                SpawnArgs::new(cmds)
            }
            Some(_) => Err(Error::Arg("Spawn needs at least one command".into())),
            None => Err(Error::Arg("the root of Spawn gave no command".into())),
        })?;
        let mut inter = self.core.h.comm_null;
        // SAFETY: at the root, arrays of `count` entries that live until
        // the call returns (`args`, `infos`); elsewhere they are not read
        // (significant at the root only). MPI_ERRCODES_IGNORE is NULL in
        // all three ABIs; the number started is the remote group's size.
        let rc = unsafe {
            match &args {
                Some(a) => spawn(
                    a.commands.len() as c_int,
                    a.commands.as_ptr(),
                    a.argvs.as_ptr(),
                    a.maxprocs.as_ptr(),
                    infos.handles.as_ptr(),
                    root,
                    self.h,
                    &mut inter,
                    std::ptr::null_mut(),
                ),
                None => spawn(
                    0,
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null(),
                    root,
                    self.h,
                    &mut inter,
                    std::ptr::null_mut(),
                ),
            }
        };
        drop(infos);
        self.core.check(rc, "MPI_Comm_spawn_multiple")?;
        self.adopt_dynamic(inter)
    }

    /// MPI_Comm_accept or MPI_Comm_connect; `port` significant at `root`.
    pub(super) fn port_connection(
        &self,
        port: Option<&str>,
        root: i32,
        accept: bool,
    ) -> Result<CommRef> {
        let what = if accept {
            "MPI_Comm_accept"
        } else {
            "MPI_Comm_connect"
        };
        self.check_intra(if accept { "Accept" } else { "Connect" })?;
        self.check_root(root)?;
        let f = need(
            if accept {
                self.core.api.MPI_Comm_accept
            } else {
                self.core.api.MPI_Comm_connect
            },
            what,
        )?;
        let port = self
            .root_checked(root, || match port {
                Some(p) if !accept && !port_name_plausible(&self.core.lib.version, p) => {
                    Err(Error::Mpi {
                        class: crate::error::class::ERR_PORT,
                        message: format!("{what}: {p:?} is not a port name of this MPI library"),
                    })
                }
                Some(p) => c_string(p, "the port name"),
                None => Err(Error::Arg(format!("the root of {what} gave no port name"))),
            })?
            // Not read away from the root.
            .unwrap_or_default();
        let mut inter = self.core.h.comm_null;
        // SAFETY: a NUL-terminated port name; a valid communicator; `inter`
        // is an out-pointer.
        let rc = unsafe {
            f(
                port.as_ptr(),
                self.core.h.info_null,
                root,
                self.h,
                &mut inter,
            )
        };
        self.core.check(rc, what)?;
        self.adopt_dynamic(inter)
    }
}

/// Could `port` be a name the library's MPI_Open_port made? MPI wants
/// MPI_ERR_PORT for a port that does not exist, but Open MPI 5.0's connect
/// waits forever for any name to be published (its ports are keys of the
/// PMIx name service) and MPICH reports a malformed one as MPI_ERR_OTHER;
/// a name of neither library's form is refused with MPI_ERR_PORT here.
/// (A well-formed name of a closed port gets the library's own answer.)
fn port_name_plausible(library_version: &str, port: &str) -> bool {
    if library_version.contains("Open MPI") {
        // "<process name>:<tag>" (ompi_dpm_open_port).
        matches!(port.rsplit_once(':'), Some((proc_name, tag))
            if !proc_name.is_empty() && !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit()))
    } else if library_version.contains("MPICH") {
        // "tag#<n>$..." (MPID_Open_port's key/value string).
        port.contains("tag#")
    } else {
        true
    }
}

/// The process-wide part: ports, names, Join, the parent.
pub(super) struct DynProc {
    /// Services this process published, with their ports: MPI_Unpublish_name
    /// needs the port, oxmpi's `publish_name(service, None)` gives none.
    published: Mutex<HashMap<String, String>>,
}

impl DynProc {
    pub fn new() -> Self {
        DynProc {
            published: Mutex::new(HashMap::new()),
        }
    }

    pub fn open_port<A: Abi>(&self, core: &Core<A>) -> Result<String> {
        let f = need(core.api.MPI_Open_port, "MPI_Open_port")?;
        let mut buf = vec![0 as c_char; PORT_ROOM];
        // SAFETY: room for MPI_MAX_PORT_NAME characters of any ABI.
        let rc = unsafe { f(core.h.info_null, buf.as_mut_ptr()) };
        core.check(rc, "MPI_Open_port")?;
        Ok(from_c_buf(&buf))
    }

    pub fn close_port<A: Abi>(&self, core: &Core<A>, port: &str) -> Result<()> {
        let f = need(core.api.MPI_Close_port, "MPI_Close_port")?;
        let port = c_string(port, "the port name")?;
        // SAFETY: a NUL-terminated string.
        core.check(unsafe { f(port.as_ptr()) }, "MPI_Close_port")
    }

    /// MPI_Publish_name, or with `port` None MPI_Unpublish_name.
    pub fn publish<A: Abi>(&self, core: &Core<A>, service: &str, port: Option<&str>) -> Result<()> {
        let c_service = c_string(service, "the service name")?;
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        match port {
            Some(port) => {
                let f = need(core.api.MPI_Publish_name, "MPI_Publish_name")?;
                let c_port = c_string(port, "the port name")?;
                // SAFETY: NUL-terminated strings.
                let rc = unsafe { f(c_service.as_ptr(), core.h.info_null, c_port.as_ptr()) };
                core.check(rc, "MPI_Publish_name")?;
                published.insert(service.to_owned(), port.to_owned());
                Ok(())
            }
            None => {
                let f = need(core.api.MPI_Unpublish_name, "MPI_Unpublish_name")?;
                // A name another process published: its port, as looked up.
                let port = match published.get(service) {
                    Some(p) => p.clone(),
                    None => self.lookup(core, service)?,
                };
                let c_port = c_string(&port, "the port name")?;
                // SAFETY: NUL-terminated strings.
                let rc = unsafe { f(c_service.as_ptr(), core.h.info_null, c_port.as_ptr()) };
                core.check(rc, "MPI_Unpublish_name")?;
                published.remove(service);
                Ok(())
            }
        }
    }

    pub fn lookup<A: Abi>(&self, core: &Core<A>, service: &str) -> Result<String> {
        let f = need(core.api.MPI_Lookup_name, "MPI_Lookup_name")?;
        let c_service = c_string(service, "the service name")?;
        let mut buf = vec![0 as c_char; PORT_ROOM];
        // SAFETY: a NUL-terminated string; room for any ABI's port name.
        let rc = unsafe { f(c_service.as_ptr(), core.h.info_null, buf.as_mut_ptr()) };
        core.check(rc, "MPI_Lookup_name")?;
        Ok(from_c_buf(&buf))
    }

    pub fn join<A: Abi>(&self, core: &Arc<Core<A>>, fd: i32) -> Result<CommRef> {
        let f = need(core.api.MPI_Comm_join, "MPI_Comm_join")?;
        let mut inter = core.h.comm_null;
        // SAFETY: `fd` is the caller's connected socket; `inter` is an
        // out-pointer.
        core.check(unsafe { f(fd, &mut inter) }, "MPI_Comm_join")?;
        if inter == core.h.comm_null {
            return Err(Error::Intern(
                "MPI_Comm_join gave no intercommunicator".into(),
            ));
        }
        Ok(Arc::new(SystemComm::wrap(core.clone(), inter, "", true)?))
    }
}

/// MPI_Comm_get_parent at start-up: the intercommunicator to the
/// processes that spawned this one, if they did.
pub(super) fn parent<A: Abi>(core: &Arc<Core<A>>) -> Result<Option<CommRef>> {
    let Some(f) = core.api.MPI_Comm_get_parent else {
        return Ok(None);
    };
    let mut h = core.h.comm_null;
    // SAFETY: `h` is an out-pointer.
    core.check(unsafe { f(&mut h) }, "MPI_Comm_get_parent")?;
    if h == core.h.comm_null {
        return Ok(None);
    }
    // The library owns the parent handle (MPI_Comm_free of it is allowed,
    // and done when oxmpi lets go of it).
    let c = SystemComm::wrap(core.clone(), h, "", true)?;
    Ok(Some(Arc::new(c)))
}
