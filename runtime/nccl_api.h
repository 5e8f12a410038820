/* nccl_api.h — NCCL, loaded at run time with dlopen (libnccl.so.2), for data-parallel training on
 * several GPUs. Like the CUDA driver (cuda_api.h), NCCL is not linked: the runtime builds and runs
 * on machines without it, and only a run with more than one rank loads it.
 *
 * The few types and entry points used are declared here from the NCCL API (nccl.h, NCCL 2.x) so
 * that no NCCL header is needed at build time; tests/t_dist.sh checks every constant and size
 * below against nccl.h where one is installed. Enumerations are passed as int (their ABI). */
#ifndef MF_NCCL_API_H
#define MF_NCCL_API_H
#include <stddef.h>

#define MF_NCCL_ID_BYTES 128                       /* NCCL_UNIQUE_ID_BYTES */
typedef struct { char internal[MF_NCCL_ID_BYTES]; } MfNcclId;   /* ncclUniqueId */
typedef struct MfNcclComm *MfNcclComm;             /* ncclComm_t (opaque) */
struct CUstream_st;                                /* cudaStream_t == CUstream */

/* ncclResult_t */
enum { MF_NCCL_SUCCESS = 0, MF_NCCL_IN_PROGRESS = 7 };
/* ncclRedOp_t, ncclDataType_t */
enum { MF_NCCL_SUM = 0, MF_NCCL_AVG = 4 };
enum { MF_NCCL_FLOAT32 = 7, MF_NCCL_BFLOAT16 = 9 };

typedef struct {
  void *lib;
  int version;                                      /* ncclGetVersion, e.g. 22809 for 2.28.9 */
  const char *(*GetErrorString)(int result);
  const char *(*GetLastError)(MfNcclComm comm);     /* NULL before NCCL 2.13 */
  int (*GetVersion)(int *version);
  int (*GetUniqueId)(MfNcclId *id);
  int (*CommInitRank)(MfNcclComm *comm, int nranks, MfNcclId id, int rank);
  int (*CommAbort)(MfNcclComm comm);
  int (*CommDestroy)(MfNcclComm comm);
  int (*CommGetAsyncError)(MfNcclComm comm, int *async_error);
  int (*AllReduce)(const void *send, void *recv, size_t count, int datatype, int op, MfNcclComm comm,
                   struct CUstream_st *stream);
  int (*ReduceScatter)(const void *send, void *recv, size_t recvcount, int datatype, int op, MfNcclComm comm,
                       struct CUstream_st *stream);
  int (*AllGather)(const void *send, void *recv, size_t sendcount, int datatype, MfNcclComm comm,
                   struct CUstream_st *stream);
} Nccl;

extern Nccl nccl;

/* Load NCCL ($MF_NCCL_LIB, else libnccl.so.2, else libnccl.so) and resolve the entry points.
 * Sets NCCL_NVLS_ENABLE=0 in the environment first unless it is already set: NVLink multicast
 * (NVLS) must stay off on the machines this runs on. Returns 0, or -1 with a one-line reason in
 * err. Idempotent. */
int nccl_load(char *err, size_t errlen);

/* "ncclSystemError (unhandled system error ...)" for a result code, with NCCL's last error
 * message for comm when there is one. */
const char *nccl_result_str(int r, MfNcclComm comm, char *buf, size_t len);
#endif
