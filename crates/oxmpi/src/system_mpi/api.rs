//! The MPI functions oxmpi calls, looked up in the loaded library with
//! their C signatures for one ABI. Fields are named after the C functions.
//!
//! oxmpi needs an MPI-3.0 library (2012: matched probes, `MPI_Get_elements_x`);
//! the MPI-4 large-count `_c` functions are used when the library has them.

#![allow(non_snake_case)]

use std::ffi::{c_char, c_int, c_void};
use std::marker::PhantomData;

use crate::error::{Error, Result};

use super::abi::{Abi, MpiAint, MpiCount};
use super::library::Loaded;

/// `MPI_User_function` of ABI `A`.
pub(crate) type UserFunction<A> =
    unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_int, *mut <A as Abi>::H);

macro_rules! mpi_api {
    (
        required { $( $name:ident ( $($arg:ty),* $(,)? ); )* }
        optional { $( $oname:ident ( $($oarg:ty),* $(,)? ); )* }
    ) => {
        /// The library's functions (every one returns an MPI error code).
        pub(crate) struct Api<A: Abi> {
            $( pub $name: unsafe extern "C" fn($($arg),*) -> c_int, )*
            $( pub $oname: Option<unsafe extern "C" fn($($oarg),*) -> c_int>, )*
            _abi: PhantomData<A>,
        }

        impl<A: Abi> Api<A> {
            /// Looks every function up; a missing required one is an error.
            pub(crate) fn load(lib: &Loaded) -> Result<Api<A>> {
                Ok(Api {
                    $(
                        // SAFETY: the field's type is the function's C
                        // signature for this ABI (see the headers in abi.rs).
                        $name: unsafe { lib.function(stringify!($name)) }.ok_or_else(|| {
                            Error::Bootstrap(format!(
                                "{} lacks {}: oxmpi needs an MPI-3.0 library",
                                lib.path,
                                stringify!($name)
                            ))
                        })?,
                    )*
                    $(
                        // SAFETY: as above.
                        $oname: unsafe { lib.function(stringify!($oname)) },
                    )*
                    _abi: PhantomData,
                })
            }
        }
    };
}

mpi_api! {
    required {
        MPI_Init_thread(*mut c_int, *mut *mut *mut c_char, c_int, *mut c_int);
        MPI_Initialized(*mut c_int);
        MPI_Finalized(*mut c_int);
        MPI_Finalize();
        MPI_Abort(A::H, c_int);
        MPI_Get_processor_name(*mut c_char, *mut c_int);
        MPI_Error_class(c_int, *mut c_int);
        MPI_Error_string(c_int, *mut c_char, *mut c_int);

        MPI_Comm_set_errhandler(A::H, A::H);
        MPI_Comm_rank(A::H, *mut c_int);
        MPI_Comm_size(A::H, *mut c_int);
        MPI_Comm_dup(A::H, *mut A::H);
        MPI_Comm_split(A::H, c_int, c_int, *mut A::H);
        MPI_Comm_free(*mut A::H);
        MPI_Comm_group(A::H, *mut A::H);
        MPI_Group_translate_ranks(A::H, c_int, *const c_int, A::H, *mut c_int);
        MPI_Group_free(*mut A::H);
        MPI_Comm_get_attr(A::H, c_int, *mut c_void, *mut c_int);

        MPI_Send(*const c_void, c_int, A::H, c_int, c_int, A::H);
        MPI_Ssend(*const c_void, c_int, A::H, c_int, c_int, A::H);
        MPI_Isend(*const c_void, c_int, A::H, c_int, c_int, A::H, *mut A::H);
        MPI_Issend(*const c_void, c_int, A::H, c_int, c_int, A::H, *mut A::H);
        MPI_Recv(*mut c_void, c_int, A::H, c_int, c_int, A::H, *mut A::Status);
        MPI_Irecv(*mut c_void, c_int, A::H, c_int, c_int, A::H, *mut A::H);
        MPI_Iprobe(c_int, c_int, A::H, *mut c_int, *mut A::Status);
        MPI_Improbe(c_int, c_int, A::H, *mut c_int, *mut A::H, *mut A::Status);
        MPI_Mrecv(*mut c_void, c_int, A::H, *mut A::H, *mut A::Status);
        MPI_Imrecv(*mut c_void, c_int, A::H, *mut A::H, *mut A::H);
        MPI_Test(*mut A::H, *mut c_int, *mut A::Status);
        MPI_Cancel(*mut A::H);
        MPI_Test_cancelled(*const A::Status, *mut c_int);
        MPI_Get_count(*const A::Status, A::H, *mut c_int);
        MPI_Get_elements_x(*const A::Status, A::H, *mut MpiCount);

        MPI_Type_create_hindexed(c_int, *const c_int, *const MpiAint, A::H, *mut A::H);
        MPI_Type_commit(*mut A::H);
        MPI_Type_free(*mut A::H);
        MPI_Op_create(UserFunction<A>, c_int, *mut A::H);
        MPI_Op_free(*mut A::H);

        MPI_Barrier(A::H);
        MPI_Bcast(*mut c_void, c_int, A::H, c_int, A::H);
        MPI_Reduce(*const c_void, *mut c_void, c_int, A::H, A::H, c_int, A::H);
        MPI_Allreduce(*const c_void, *mut c_void, c_int, A::H, A::H, A::H);
        MPI_Gather(*const c_void, c_int, A::H, *mut c_void, c_int, A::H, c_int, A::H);
        MPI_Gatherv(*const c_void, c_int, A::H, *mut c_void, *const c_int, *const c_int,
                    A::H, c_int, A::H);
        MPI_Allgather(*const c_void, c_int, A::H, *mut c_void, c_int, A::H, A::H);
        MPI_Allgatherv(*const c_void, c_int, A::H, *mut c_void, *const c_int, *const c_int,
                       A::H, A::H);
        MPI_Scatterv(*const c_void, *const c_int, *const c_int, A::H, *mut c_void, c_int,
                     A::H, c_int, A::H);
        MPI_Alltoall(*const c_void, c_int, A::H, *mut c_void, c_int, A::H, A::H);
        MPI_Alltoallv(*const c_void, *const c_int, *const c_int, A::H, *mut c_void,
                      *const c_int, *const c_int, A::H, A::H);

        MPI_Comm_test_inter(A::H, *mut c_int);
        MPI_Comm_remote_size(A::H, *mut c_int);
        MPI_Comm_remote_group(A::H, *mut A::H);
        MPI_Comm_create(A::H, A::H, *mut A::H);
        MPI_Comm_create_group(A::H, A::H, c_int, *mut A::H);
        MPI_Group_incl(A::H, c_int, *const c_int, *mut A::H);
        MPI_Intercomm_create(A::H, c_int, A::H, c_int, c_int, *mut A::H);
        MPI_Intercomm_merge(A::H, c_int, *mut A::H);

        MPI_Cart_create(A::H, c_int, *const c_int, *const c_int, c_int, *mut A::H);
        MPI_Graph_create(A::H, c_int, *const c_int, *const c_int, c_int, *mut A::H);
        MPI_Dist_graph_create_adjacent(A::H, c_int, *const c_int, *const c_int, c_int,
                                       *const c_int, *const c_int, A::H, c_int, *mut A::H);
        MPI_Neighbor_alltoallw(*const c_void, *const c_int, *const MpiAint, *const A::H,
                               *mut c_void, *const c_int, *const MpiAint, *const A::H, A::H);
        MPI_Ineighbor_alltoallw(*const c_void, *const c_int, *const MpiAint, *const A::H,
                                *mut c_void, *const c_int, *const MpiAint, *const A::H, A::H,
                                *mut A::H);

        MPI_Ibarrier(A::H, *mut A::H);
        MPI_Ibcast(*mut c_void, c_int, A::H, c_int, A::H, *mut A::H);
        MPI_Igatherv(*const c_void, c_int, A::H, *mut c_void, *const c_int, *const c_int,
                     A::H, c_int, A::H, *mut A::H);
        MPI_Iscatterv(*const c_void, *const c_int, *const c_int, A::H, *mut c_void, c_int,
                      A::H, c_int, A::H, *mut A::H);
        MPI_Iallgatherv(*const c_void, c_int, A::H, *mut c_void, *const c_int, *const c_int,
                        A::H, A::H, *mut A::H);
        MPI_Ialltoallv(*const c_void, *const c_int, *const c_int, A::H, *mut c_void,
                       *const c_int, *const c_int, A::H, A::H, *mut A::H);
        MPI_Ireduce(*const c_void, *mut c_void, c_int, A::H, A::H, c_int, A::H, *mut A::H);
        MPI_Iallreduce(*const c_void, *mut c_void, c_int, A::H, A::H, A::H, *mut A::H);
        MPI_Ireduce_scatter(*const c_void, *mut c_void, *const c_int, A::H, A::H, A::H,
                            *mut A::H);
        MPI_Iscan(*const c_void, *mut c_void, c_int, A::H, A::H, A::H, *mut A::H);
        MPI_Iexscan(*const c_void, *mut c_void, c_int, A::H, A::H, A::H, *mut A::H);
    }
    optional {
        MPI_Get_count_c(*const A::Status, A::H, *mut MpiCount);
        MPI_Bcast_c(*mut c_void, MpiCount, A::H, c_int, A::H);
        MPI_Reduce_c(*const c_void, *mut c_void, MpiCount, A::H, A::H, c_int, A::H);
        MPI_Allreduce_c(*const c_void, *mut c_void, MpiCount, A::H, A::H, A::H);
        MPI_Gatherv_c(*const c_void, MpiCount, A::H, *mut c_void, *const MpiCount,
                      *const MpiAint, A::H, c_int, A::H);
        MPI_Allgatherv_c(*const c_void, MpiCount, A::H, *mut c_void, *const MpiCount,
                         *const MpiAint, A::H, A::H);
        MPI_Scatterv_c(*const c_void, *const MpiCount, *const MpiAint, A::H, *mut c_void,
                       MpiCount, A::H, c_int, A::H);
        MPI_Alltoallv_c(*const c_void, *const MpiCount, *const MpiAint, A::H, *mut c_void,
                        *const MpiCount, *const MpiAint, A::H, A::H);
        MPI_Ibcast_c(*mut c_void, MpiCount, A::H, c_int, A::H, *mut A::H);
        MPI_Igatherv_c(*const c_void, MpiCount, A::H, *mut c_void, *const MpiCount,
                       *const MpiAint, A::H, c_int, A::H, *mut A::H);
        MPI_Iscatterv_c(*const c_void, *const MpiCount, *const MpiAint, A::H, *mut c_void,
                        MpiCount, A::H, c_int, A::H, *mut A::H);
        MPI_Iallgatherv_c(*const c_void, MpiCount, A::H, *mut c_void, *const MpiCount,
                          *const MpiAint, A::H, A::H, *mut A::H);
        MPI_Ialltoallv_c(*const c_void, *const MpiCount, *const MpiAint, A::H, *mut c_void,
                         *const MpiCount, *const MpiAint, A::H, A::H, *mut A::H);
        MPI_Ireduce_c(*const c_void, *mut c_void, MpiCount, A::H, A::H, c_int, A::H,
                      *mut A::H);
        MPI_Iallreduce_c(*const c_void, *mut c_void, MpiCount, A::H, A::H, A::H, *mut A::H);
        MPI_Ireduce_scatter_c(*const c_void, *mut c_void, *const MpiCount, A::H, A::H, A::H,
                              *mut A::H);
        MPI_Iscan_c(*const c_void, *mut c_void, MpiCount, A::H, A::H, A::H, *mut A::H);
        MPI_Iexscan_c(*const c_void, *mut c_void, MpiCount, A::H, A::H, A::H, *mut A::H);

        // Process creation and management (dynproc.rs); a library built
        // without them still runs everything else.
        MPI_Comm_spawn_multiple(c_int, *const *mut c_char, *const *mut *mut c_char,
                                *const c_int, *const A::H, c_int, A::H, *mut A::H,
                                *mut c_int);
        MPI_Comm_get_parent(*mut A::H);
        MPI_Comm_disconnect(*mut A::H);
        MPI_Open_port(A::H, *mut c_char);
        MPI_Close_port(*const c_char);
        MPI_Comm_accept(*const c_char, A::H, c_int, A::H, *mut A::H);
        MPI_Comm_connect(*const c_char, A::H, c_int, A::H, *mut A::H);
        MPI_Publish_name(*const c_char, A::H, *const c_char);
        MPI_Unpublish_name(*const c_char, A::H, *const c_char);
        MPI_Lookup_name(*const c_char, A::H, *mut c_char);
        MPI_Comm_join(c_int, *mut A::H);
        MPI_Info_create(*mut A::H);
        MPI_Info_set(A::H, *const c_char, *const c_char);
        MPI_Info_free(*mut A::H);
    }
}
