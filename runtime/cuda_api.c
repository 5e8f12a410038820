/* cuda_api.c — dlopen the CUDA driver and cuBLASLt, resolve their entry points (see cuda_api.h).
 * Driver symbols are looked up by their exported, versioned names (what cuda.h's #defines map the
 * plain names to for CUDA 13), not through cuGetProcAddress: asked for "cuCtxSynchronize" at
 * version 13000 that would hand back the new (CUcontext) form, a different signature. */
#define _POSIX_C_SOURCE 200809L
#include "cuda_api.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CudaDriver cu;
CublasLt lt;

/* Resolve the first of up to two names that the library exports. */
static void *sym2(void *lib, const char *name, const char *alt) {
  void *p = dlsym(lib, name);
  if (!p && alt) p = dlsym(lib, alt);
  return p;
}

/* dlsym returns void*; copying it into a function pointer through memcpy keeps C11 strictness
 * (ISO C does not define a cast between object and function pointers). */
#define LOAD(lib, member, name, alt, what)                                          \
  do {                                                                              \
    void *p_ = sym2(lib, name, alt);                                                \
    if (!p_) {                                                                      \
      snprintf(err, errlen, "%s: symbol %s not found (driver/library too old?)", what, name); \
      return -1;                                                                    \
    }                                                                               \
    memcpy(&(member), &p_, sizeof p_);                                              \
  } while (0)

const char *cu_result_str(CUresult r, char *buf, size_t len) {
  const char *name = NULL, *str = NULL;
  if (cu.GetErrorName) cu.GetErrorName(r, &name);
  if (cu.GetErrorString) cu.GetErrorString(r, &str);
  if (name)
    snprintf(buf, len, "%s (%s)", name, str ? str : "no description");
  else
    snprintf(buf, len, "CUresult %d", (int)r);
  return buf;
}

void cu_check_fail(CUresult r, const char *call, const char *file, int line) {
  char b[512];
  fflush(stdout);
  fprintf(stderr, "runtime: CUDA call failed: %s\n  -> %s at %s:%d\n", call,
          cu_result_str(r, b, sizeof b), file, line);
  exit(1);
}

void lt_check_fail(cublasStatus_t s, const char *call, const char *file, int line) {
  const char *name = lt.GetStatusName ? lt.GetStatusName(s) : NULL;
  const char *str = lt.GetStatusString ? lt.GetStatusString(s) : NULL;
  fflush(stdout);
  fprintf(stderr, "runtime: cuBLASLt call failed: %s\n  -> %s (%s), status %d at %s:%d\n", call,
          name ? name : "?", str ? str : "?", (int)s, file, line);
  exit(1);
}

int cuda_load(char *err, size_t errlen) {
  if (cu.lib) return 0;
  const char *what = "libcuda.so.1";
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(err, errlen, "no CUDA driver: cannot load libcuda.so.1 (%s)", dlerror());
    return -1;
  }
  CudaDriver d;
  memset(&d, 0, sizeof d);
  d.lib = h;
  /* the error-string functions first, so later failures can be described */
  LOAD(h, d.GetErrorString, "cuGetErrorString", NULL, what);
  LOAD(h, d.GetErrorName, "cuGetErrorName", NULL, what);
  LOAD(h, d.Init, "cuInit", NULL, what);
  LOAD(h, d.DriverGetVersion, "cuDriverGetVersion", NULL, what);
  LOAD(h, d.DeviceGet, "cuDeviceGet", NULL, what);
  LOAD(h, d.DeviceGetCount, "cuDeviceGetCount", NULL, what);
  LOAD(h, d.DeviceGetName, "cuDeviceGetName", NULL, what);
  LOAD(h, d.DeviceGetAttribute, "cuDeviceGetAttribute", NULL, what);
  LOAD(h, d.DeviceTotalMem, "cuDeviceTotalMem_v2", NULL, what);
  LOAD(h, d.DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL, what);
  LOAD(h, d.DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", NULL, what);
  LOAD(h, d.CtxSetCurrent, "cuCtxSetCurrent", NULL, what);
  LOAD(h, d.CtxSynchronize, "cuCtxSynchronize", NULL, what);
  LOAD(h, d.MemGetInfo, "cuMemGetInfo_v2", NULL, what);
  LOAD(h, d.MemAlloc, "cuMemAlloc_v2", NULL, what);
  LOAD(h, d.MemFree, "cuMemFree_v2", NULL, what);
  LOAD(h, d.MemHostAlloc, "cuMemHostAlloc", NULL, what);
  LOAD(h, d.MemFreeHost, "cuMemFreeHost", NULL, what);
  LOAD(h, d.MemcpyHtoD, "cuMemcpyHtoD_v2", NULL, what);
  LOAD(h, d.MemcpyDtoH, "cuMemcpyDtoH_v2", NULL, what);
  LOAD(h, d.MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", NULL, what);
  LOAD(h, d.MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", NULL, what);
  LOAD(h, d.MemsetD32Async, "cuMemsetD32Async", NULL, what);
  LOAD(h, d.MemsetD8Async, "cuMemsetD8Async", NULL, what);
  LOAD(h, d.ModuleLoadData, "cuModuleLoadData", NULL, what);
  LOAD(h, d.ModuleLoadDataEx, "cuModuleLoadDataEx", NULL, what);
  LOAD(h, d.ModuleUnload, "cuModuleUnload", NULL, what);
  LOAD(h, d.ModuleGetFunction, "cuModuleGetFunction", NULL, what);
  LOAD(h, d.ModuleGetGlobal, "cuModuleGetGlobal_v2", NULL, what);
  LOAD(h, d.FuncSetAttribute, "cuFuncSetAttribute", NULL, what);
  LOAD(h, d.FuncGetAttribute, "cuFuncGetAttribute", NULL, what);
  LOAD(h, d.LaunchKernel, "cuLaunchKernel", NULL, what);
  LOAD(h, d.StreamCreate, "cuStreamCreate", NULL, what);
  LOAD(h, d.StreamDestroy, "cuStreamDestroy_v2", NULL, what);
  LOAD(h, d.StreamSynchronize, "cuStreamSynchronize", NULL, what);
  LOAD(h, d.StreamBeginCapture, "cuStreamBeginCapture_v2", NULL, what);
  LOAD(h, d.StreamEndCapture, "cuStreamEndCapture", NULL, what);
  LOAD(h, d.GraphInstantiateWithFlags, "cuGraphInstantiateWithFlags", NULL, what);
  LOAD(h, d.GraphLaunch, "cuGraphLaunch", NULL, what);
  LOAD(h, d.GraphExecDestroy, "cuGraphExecDestroy", NULL, what);
  LOAD(h, d.GraphDestroy, "cuGraphDestroy", NULL, what);
  LOAD(h, d.EventCreate, "cuEventCreate", NULL, what);
  LOAD(h, d.EventRecord, "cuEventRecord", NULL, what);
  LOAD(h, d.EventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime", what);
  LOAD(h, d.EventSynchronize, "cuEventSynchronize", NULL, what);
  LOAD(h, d.EventDestroy, "cuEventDestroy_v2", NULL, what);
  LOAD(h, d.StreamWaitEvent, "cuStreamWaitEvent", NULL, what);
  LOAD(h, d.StreamQuery, "cuStreamQuery", NULL, what);

  CUresult r = d.Init(0);
  if (r != CUDA_SUCCESS) {
    cu = d; /* for the error text */
    char b[256];
    snprintf(err, errlen, "cuInit failed: %s", cu_result_str(r, b, sizeof b));
    memset(&cu, 0, sizeof cu);
    dlclose(h);
    return -1;
  }
  if (d.DriverGetVersion(&d.version) != CUDA_SUCCESS) d.version = 0;
  cu = d;
  return 0;
}

int cublaslt_load(char *err, size_t errlen) {
  if (lt.lib) return 0;
  static const char *names[] = {"libcublasLt.so.13", "libcublasLt.so",
                                "/usr/local/cuda/lib64/libcublasLt.so.13"};
  void *h = NULL;
  char first[256] = "";
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) {
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h && i == 0) snprintf(first, sizeof first, "%s", dlerror());
  }
  if (!h) {
    snprintf(err, errlen, "cannot load cuBLASLt (libcublasLt.so.13: %s)", first);
    return -1;
  }
  const char *what = "libcublasLt";
  CublasLt l;
  memset(&l, 0, sizeof l);
  l.lib = h;
  LOAD(h, l.GetStatusName, "cublasLtGetStatusName", NULL, what);
  LOAD(h, l.GetStatusString, "cublasLtGetStatusString", NULL, what);
  LOAD(h, l.GetVersion, "cublasLtGetVersion", NULL, what);
  LOAD(h, l.Create, "cublasLtCreate", NULL, what);
  LOAD(h, l.Destroy, "cublasLtDestroy", NULL, what);
  LOAD(h, l.MatmulDescCreate, "cublasLtMatmulDescCreate", NULL, what);
  LOAD(h, l.MatmulDescDestroy, "cublasLtMatmulDescDestroy", NULL, what);
  LOAD(h, l.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute", NULL, what);
  LOAD(h, l.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate", NULL, what);
  LOAD(h, l.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy", NULL, what);
  LOAD(h, l.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate", NULL, what);
  LOAD(h, l.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy", NULL, what);
  LOAD(h, l.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute", NULL, what);
  LOAD(h, l.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic", NULL, what);
  LOAD(h, l.Matmul, "cublasLtMatmul", NULL, what);
  l.version = l.GetVersion();
  lt = l;
  return 0;
}
