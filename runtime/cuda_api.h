/* cuda_api.h — the CUDA driver API and cuBLASLt, loaded at run time with dlopen.
 * The runtime binary is not linked against libcuda or libcublasLt, so it starts (and runs --cpu)
 * on machines without a GPU or driver. The function-pointer types come from the CUDA headers
 * (cudaTypedefs.h for the driver, cublasLt.h prototypes for cuBLASLt) so the signatures are the
 * toolkit's own. Every call goes through CU_CHECK / LT_CHECK, which print the call, the status name
 * and string and file:line, then exit. */
#ifndef MF_CUDA_API_H
#define MF_CUDA_API_H
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cublasLt.h>
#include <stddef.h>

/* Driver entry points. Each is resolved by its exported (versioned) symbol name, given in
 * cuda_api.c; the member names drop the "cu" prefix so cuda.h's #defines (cuMemAlloc ->
 * cuMemAlloc_v2 ...) never rewrite them. */
typedef struct {
  void *lib;
  int version;                                      /* cuDriverGetVersion, e.g. 13000 */
  PFN_cuGetErrorString_v6000 GetErrorString;
  PFN_cuGetErrorName_v6000 GetErrorName;
  PFN_cuInit_v2000 Init;
  PFN_cuDriverGetVersion_v2020 DriverGetVersion;
  PFN_cuDeviceGet_v2000 DeviceGet;
  PFN_cuDeviceGetCount_v2000 DeviceGetCount;
  PFN_cuDeviceGetName_v2000 DeviceGetName;
  PFN_cuDeviceGetAttribute_v2000 DeviceGetAttribute;
  PFN_cuDeviceTotalMem_v3020 DeviceTotalMem;         /* cuDeviceTotalMem_v2 */
  PFN_cuDevicePrimaryCtxRetain_v7000 DevicePrimaryCtxRetain;
  PFN_cuDevicePrimaryCtxRelease_v11000 DevicePrimaryCtxRelease; /* cuDevicePrimaryCtxRelease_v2 */
  PFN_cuCtxSetCurrent_v4000 CtxSetCurrent;
  PFN_cuCtxSynchronize_v2000 CtxSynchronize;         /* the (void) form, symbol cuCtxSynchronize */
  PFN_cuMemGetInfo_v3020 MemGetInfo;                 /* cuMemGetInfo_v2 */
  PFN_cuMemAlloc_v3020 MemAlloc;                     /* cuMemAlloc_v2 */
  PFN_cuMemFree_v3020 MemFree;                       /* cuMemFree_v2 */
  PFN_cuMemHostAlloc_v2020 MemHostAlloc;
  PFN_cuMemFreeHost_v2000 MemFreeHost;
  PFN_cuMemcpyHtoD_v3020 MemcpyHtoD;                 /* cuMemcpyHtoD_v2 */
  PFN_cuMemcpyDtoH_v3020 MemcpyDtoH;                 /* cuMemcpyDtoH_v2 */
  PFN_cuMemcpyHtoDAsync_v3020 MemcpyHtoDAsync;       /* cuMemcpyHtoDAsync_v2 */
  PFN_cuMemcpyDtoHAsync_v3020 MemcpyDtoHAsync;       /* cuMemcpyDtoHAsync_v2 */
  PFN_cuMemsetD32Async_v3020 MemsetD32Async;
  PFN_cuMemsetD8Async_v3020 MemsetD8Async;
  PFN_cuModuleLoadData_v2000 ModuleLoadData;
  PFN_cuModuleLoadDataEx_v2010 ModuleLoadDataEx;
  PFN_cuModuleUnload_v2000 ModuleUnload;
  PFN_cuModuleGetFunction_v2000 ModuleGetFunction;
  PFN_cuModuleGetGlobal_v3020 ModuleGetGlobal;       /* cuModuleGetGlobal_v2 */
  PFN_cuFuncSetAttribute_v9000 FuncSetAttribute;
  PFN_cuFuncGetAttribute_v2020 FuncGetAttribute;
  PFN_cuLaunchKernel_v4000 LaunchKernel;
  PFN_cuStreamCreate_v2000 StreamCreate;
  PFN_cuStreamDestroy_v4000 StreamDestroy;           /* cuStreamDestroy_v2 */
  PFN_cuStreamSynchronize_v2000 StreamSynchronize;
  PFN_cuStreamBeginCapture_v10010 StreamBeginCapture;/* cuStreamBeginCapture_v2 */
  PFN_cuStreamEndCapture_v10000 StreamEndCapture;
  PFN_cuGraphInstantiateWithFlags_v11040 GraphInstantiateWithFlags;
  PFN_cuGraphLaunch_v10000 GraphLaunch;
  PFN_cuGraphExecDestroy_v10000 GraphExecDestroy;
  PFN_cuGraphDestroy_v10000 GraphDestroy;
  PFN_cuEventCreate_v2000 EventCreate;
  PFN_cuEventRecord_v2000 EventRecord;
  PFN_cuEventElapsedTime_v2000 EventElapsedTime;     /* cuEventElapsedTime_v2, else cuEventElapsedTime */
  PFN_cuEventSynchronize_v2000 EventSynchronize;
  PFN_cuEventDestroy_v4000 EventDestroy;             /* cuEventDestroy_v2 */
  PFN_cuStreamWaitEvent_v3020 StreamWaitEvent;       /* several GPUs: fork/join of the comm stream */
  PFN_cuStreamQuery_v2000 StreamQuery;               /* several GPUs: the watchdog's wait */
} CudaDriver;

/* cuBLASLt entry points (prototypes as in cublasLt.h). */
typedef struct {
  void *lib;
  size_t version;                                   /* cublasLtGetVersion, e.g. 130000 */
  cublasStatus_t (*Create)(cublasLtHandle_t *);
  cublasStatus_t (*Destroy)(cublasLtHandle_t);
  size_t (*GetVersion)(void);
  const char *(*GetStatusName)(cublasStatus_t);
  const char *(*GetStatusString)(cublasStatus_t);
  cublasStatus_t (*MatmulDescCreate)(cublasLtMatmulDesc_t *, cublasComputeType_t, cudaDataType_t);
  cublasStatus_t (*MatmulDescDestroy)(cublasLtMatmulDesc_t);
  cublasStatus_t (*MatmulDescSetAttribute)(cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t,
                                           const void *, size_t);
  cublasStatus_t (*MatrixLayoutCreate)(cublasLtMatrixLayout_t *, cudaDataType, uint64_t, uint64_t,
                                       int64_t);
  cublasStatus_t (*MatrixLayoutDestroy)(cublasLtMatrixLayout_t);
  cublasStatus_t (*MatmulPreferenceCreate)(cublasLtMatmulPreference_t *);
  cublasStatus_t (*MatmulPreferenceDestroy)(cublasLtMatmulPreference_t);
  cublasStatus_t (*MatmulPreferenceSetAttribute)(cublasLtMatmulPreference_t,
                                                 cublasLtMatmulPreferenceAttributes_t, const void *,
                                                 size_t);
  cublasStatus_t (*MatmulAlgoGetHeuristic)(cublasLtHandle_t, cublasLtMatmulDesc_t,
                                           cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                           cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                           cublasLtMatmulPreference_t, int,
                                           cublasLtMatmulHeuristicResult_t[], int *);
  cublasStatus_t (*Matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void *, const void *,
                           cublasLtMatrixLayout_t, const void *, cublasLtMatrixLayout_t,
                           const void *, const void *, cublasLtMatrixLayout_t, void *,
                           cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t *, void *, size_t,
                           cudaStream_t);
} CublasLt;

extern CudaDriver cu;
extern CublasLt lt;

/* Load libcuda.so.1 and resolve every entry point, then cuInit(0). Returns 0, or -1 with a
 * one-line reason in err (library absent, symbol missing, cuInit failed). Idempotent. */
int cuda_load(char *err, size_t errlen);
/* Load libcublasLt.so.13 (else libcublasLt.so, else the toolkit's lib64 copy). Same contract. */
int cublaslt_load(char *err, size_t errlen);

/* "CUDA_ERROR_X (text)" for a CUresult; safe before/without the driver. */
const char *cu_result_str(CUresult r, char *buf, size_t len);

_Noreturn void cu_check_fail(CUresult r, const char *call, const char *file, int line);
_Noreturn void lt_check_fail(cublasStatus_t s, const char *call, const char *file, int line);

#define CU_CHECK(call)                                                   \
  do {                                                                   \
    CUresult cu_r_ = (call);                                             \
    if (cu_r_ != CUDA_SUCCESS) cu_check_fail(cu_r_, #call, __FILE__, __LINE__); \
  } while (0)

#define LT_CHECK(call)                                                   \
  do {                                                                   \
    cublasStatus_t lt_s_ = (call);                                       \
    if (lt_s_ != CUBLAS_STATUS_SUCCESS) lt_check_fail(lt_s_, #call, __FILE__, __LINE__); \
  } while (0)
#endif
