/* nccl_api.c — dlopen NCCL and resolve its entry points (see nccl_api.h). */
#define _POSIX_C_SOURCE 200809L
#include "nccl_api.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Nccl nccl;

/* dlsym returns void*; copying it into a function pointer through memcpy keeps C11 strictness. */
#define LOAD(member, name)                                                                        \
  do {                                                                                            \
    void *p_ = dlsym(h, name);                                                                    \
    if (!p_) {                                                                                    \
      snprintf(err, errlen, "%s: symbol %s not found (NCCL too old?)", path, name);               \
      dlclose(h);                                                                                 \
      return -1;                                                                                  \
    }                                                                                             \
    memcpy(&(n.member), &p_, sizeof p_);                                                          \
  } while (0)

int nccl_load(char *err, size_t errlen) {
  if (nccl.lib) return 0;
  /* NVLink multicast (NVLS) off unless the user decided otherwise: set before NCCL reads its
   * environment, which it does once, at its first initialisation. */
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  const char *env = getenv("MF_NCCL_LIB");
  const char *names[3] = {"libnccl.so.2", "libnccl.so", NULL};
  if (env && *env) names[0] = env, names[1] = NULL;
  void *h = NULL;
  const char *path = NULL;
  char first[512] = "";
  for (int i = 0; names[i] && !h; i++) {
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (h) path = names[i];
    else if (i == 0) snprintf(first, sizeof first, "%s", dlerror());
  }
  if (!h) {
    snprintf(err, errlen, "cannot load NCCL (%s); install NCCL 2 or point MF_NCCL_LIB at libnccl.so.2", first);
    return -1;
  }
  Nccl n;
  memset(&n, 0, sizeof n);
  n.lib = h;
  LOAD(GetErrorString, "ncclGetErrorString");
  LOAD(GetVersion, "ncclGetVersion");
  LOAD(GetUniqueId, "ncclGetUniqueId");
  LOAD(CommInitRank, "ncclCommInitRank");
  LOAD(CommAbort, "ncclCommAbort");
  LOAD(CommDestroy, "ncclCommDestroy");
  LOAD(CommGetAsyncError, "ncclCommGetAsyncError");
  LOAD(AllReduce, "ncclAllReduce");
  LOAD(ReduceScatter, "ncclReduceScatter");
  LOAD(AllGather, "ncclAllGather");
  void *gle = dlsym(h, "ncclGetLastError"); /* optional: a better message when present */
  if (gle) memcpy(&n.GetLastError, &gle, sizeof gle);
  if (n.GetVersion(&n.version) != MF_NCCL_SUCCESS) n.version = 0;
  nccl = n;
  return 0;
}

const char *nccl_result_str(int r, MfNcclComm comm, char *buf, size_t len) {
  static const char *names[] = {"ncclSuccess",         "ncclUnhandledCudaError", "ncclSystemError",
                                "ncclInternalError",   "ncclInvalidArgument",    "ncclInvalidUsage",
                                "ncclRemoteError",     "ncclInProgress"};
  const char *name = r >= 0 && r < (int)(sizeof names / sizeof names[0]) ? names[r] : "ncclResult?";
  const char *str = nccl.GetErrorString ? nccl.GetErrorString(r) : NULL;
  const char *last = comm && nccl.GetLastError ? nccl.GetLastError(comm) : NULL;
  snprintf(buf, len, "%s (%s)%s%s", name, str ? str : "no description", last && *last ? ": " : "",
           last && *last ? last : "");
  return buf;
}
