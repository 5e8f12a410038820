/* gen/main.c — the generator's driver: a Lua 5.4 state running gen/driver.lua, plus the two
 * things Lua cannot do itself: compile CUDA with NVRTC (loaded with dlopen, so `gen --dump` works
 * on machines without CUDA) and replace the output directory atomically.
 *
 * Exit codes: 0 ok, 1 internal/tool failure (NVRTC missing, I/O), 2 bad input (spec, flags). */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* ---- NVRTC through dlopen: only the handful of entry points we use ---------------------- */
typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;
static struct {
  void *lib;
  nvrtcResult (*create)(nvrtcProgram *, const char *, const char *, int, const char *const *, const char *const *);
  nvrtcResult (*compile)(nvrtcProgram, int, const char *const *);
  nvrtcResult (*log_size)(nvrtcProgram, size_t *);
  nvrtcResult (*log)(nvrtcProgram, char *);
  nvrtcResult (*ptx_size)(nvrtcProgram, size_t *);
  nvrtcResult (*ptx)(nvrtcProgram, char *);
  nvrtcResult (*cubin_size)(nvrtcProgram, size_t *);
  nvrtcResult (*cubin)(nvrtcProgram, char *);
  nvrtcResult (*destroy)(nvrtcProgram *);
  nvrtcResult (*version)(int *, int *);
  const char *(*errstr)(nvrtcResult);
} nv;

static const char *load_nvrtc(void) {
  if (nv.lib) return NULL;
  const char *names[] = {"libnvrtc.so.13", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13", NULL};
  for (int i = 0; names[i] && !nv.lib; i++) nv.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!nv.lib) return "cannot load NVRTC (libnvrtc.so.13): install the CUDA toolkit or set LD_LIBRARY_PATH";
#define SYM(field, name) if (!(*(void **)&nv.field = dlsym(nv.lib, name))) return "NVRTC lacks " name;
  SYM(create, "nvrtcCreateProgram") SYM(compile, "nvrtcCompileProgram")
  SYM(log_size, "nvrtcGetProgramLogSize") SYM(log, "nvrtcGetProgramLog")
  SYM(ptx_size, "nvrtcGetPTXSize") SYM(ptx, "nvrtcGetPTX")
  SYM(cubin_size, "nvrtcGetCUBINSize") SYM(cubin, "nvrtcGetCUBIN")
  SYM(destroy, "nvrtcDestroyProgram") SYM(version, "nvrtcVersion") SYM(errstr, "nvrtcGetErrorString")
#undef SYM
  return NULL;
}

/* mf.nvrtc(source, name, {options...}, want_cubin) -> ptx, cubin|nil, log
 * On a compile error: nil, nil, log. On a missing NVRTC: raises. */
static int l_nvrtc(lua_State *L) {
  size_t srclen;
  const char *src = luaL_checklstring(L, 1, &srclen);
  const char *name = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  int want_cubin = lua_toboolean(L, 4);
  const char *err = load_nvrtc();
  if (err) return luaL_error(L, "%s", err);
  int nopt = (int)luaL_len(L, 3);
  const char **opts = calloc((size_t)nopt + 1, sizeof *opts);
  for (int i = 0; i < nopt; i++) {
    lua_geti(L, 3, i + 1);
    opts[i] = lua_tostring(L, -1); /* kept alive by the table */
    lua_pop(L, 1);
  }
  nvrtcProgram prog;
  if (nv.create(&prog, src, name, 0, NULL, NULL) != 0) { free(opts); return luaL_error(L, "nvrtcCreateProgram failed"); }
  nvrtcResult rc = nv.compile(prog, nopt, opts);
  free(opts);
  size_t n = 0;
  nv.log_size(prog, &n);
  char *log = malloc(n + 1);
  nv.log(prog, log);
  log[n] = 0;
  if (rc != 0) {
    lua_pushnil(L); lua_pushnil(L); lua_pushstring(L, log);
    free(log); nv.destroy(&prog);
    return 3;
  }
  nv.ptx_size(prog, &n);
  char *ptx = malloc(n);
  nv.ptx(prog, ptx);
  lua_pushlstring(L, ptx, n ? n - 1 : 0); /* drop the trailing NUL */
  free(ptx);
  if (want_cubin) {
    nv.cubin_size(prog, &n);
    char *cub = malloc(n ? n : 1);
    nv.cubin(prog, cub);
    lua_pushlstring(L, cub, n);
    free(cub);
  } else {
    lua_pushnil(L);
  }
  lua_pushstring(L, log);
  free(log);
  nv.destroy(&prog);
  return 3;
}

static int l_nvrtc_version(lua_State *L) {
  const char *err = load_nvrtc();
  if (err) { lua_pushnil(L); lua_pushstring(L, err); return 2; }
  int a = 0, b = 0;
  nv.version(&a, &b);
  lua_pushfstring(L, "%d.%d", a, b);
  return 1;
}

/* ---- files ------------------------------------------------------------------------------ */
static int write_all(const char *path, const char *data, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  size_t off = 0;
  while (off < n) {
    ssize_t w = write(fd, data + off, n - off);
    if (w < 0) { if (errno == EINTR) continue; close(fd); return -1; }
    off += (size_t)w;
  }
  if (fsync(fd) != 0) { close(fd); return -1; }
  return close(fd);
}

static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[PATH_MAX];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p); else unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

/* mf.publish(dir, {name = content, ...}) — writes every file into a fresh temporary directory
 * beside `dir`, then swaps it in with one rename (RENAME_EXCHANGE when dir exists), so a reader
 * sees either the old complete output or the new complete output, never a mix. */
static int l_publish(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", dir, (int)getpid());
  rm_tree(tmp);
  /* make parents of dir */
  char parent[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", dir);
  for (char *s = parent + 1; *s; s++)
    if (*s == '/') { *s = 0; mkdir(parent, 0755); *s = '/'; }
  if (mkdir(tmp, 0755) != 0) return luaL_error(L, "cannot create %s: %s", tmp, strerror(errno));
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    size_t n;
    const char *name = luaL_checkstring(L, -2);
    const char *data = luaL_checklstring(L, -1, &n);
    char p[2 * PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    if (write_all(p, data, n) != 0) {
      int e = errno;
      rm_tree(tmp);
      return luaL_error(L, "cannot write %s: %s", p, strerror(e));
    }
    lua_pop(L, 1);
  }
  struct stat st;
  if (stat(dir, &st) == 0) {
    /* the runtime's run directory (metrics, checkpoints) is not generated output: carry it over */
    char oldrun[2 * PATH_MAX], newrun[2 * PATH_MAX];
    snprintf(oldrun, sizeof oldrun, "%s/run", dir);
    snprintf(newrun, sizeof newrun, "%s/run", tmp);
    if (stat(oldrun, &st) == 0 && S_ISDIR(st.st_mode) && rename(oldrun, newrun) != 0) {
      int e = errno;
      rm_tree(tmp);
      return luaL_error(L, "cannot keep %s: %s", oldrun, strerror(e));
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) != 0) {
      int e = errno;
      rename(newrun, oldrun); /* give the run directory back before dropping the new output */
      rm_tree(tmp);
      return luaL_error(L, "cannot replace %s: %s", dir, strerror(e));
    }
    rm_tree(tmp); /* now holds the old output */
  } else if (rename(tmp, dir) != 0) {
    int e = errno;
    rm_tree(tmp);
    return luaL_error(L, "cannot create %s: %s", dir, strerror(e));
  }
  return 0;
}

/* mf.read(path) -> content | nil, err   (the generator's own files: templates, specs) */
static int l_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  FILE *f = fopen(path, "rb");
  if (!f) { lua_pushnil(L); lua_pushfstring(L, "%s: %s", path, strerror(errno)); return 2; }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) luaL_addlstring(&b, chunk, n);
  fclose(f);
  luaL_pushresult(&b);
  return 1;
}

/* mf.write_atomic(path, content) -> true | nil, err — write PATH.tmp.<pid>, fsync, rename onto path
 * (a spec written by `gen --import-hf`: a reader never sees half a file). */
static int l_write_atomic(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  char tmp[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  if (write_all(tmp, data, n) != 0 || rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* mf.list(dir) -> sorted array of file names */
static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int l_list(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  lua_newtable(L);
  if (!d) return 1;
  char *names[1024];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 1024)
    if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmpstr);
  for (int i = 0; i < n; i++) { lua_pushstring(L, names[i]); lua_rawseti(L, -2, i + 1); free(names[i]); }
  return 1;
}

static int l_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec * 1e-9);
  return 1;
}

/* The generator's home: MOONFORGE_HOME, else the directory above this binary (bin/..). */
static void find_home(const char *argv0, char *home, size_t n) {
  const char *env = getenv("MOONFORGE_HOME");
  if (env && *env) { snprintf(home, n, "%s", env); return; }
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len > 0) exe[len] = 0; else snprintf(exe, sizeof exe, "%s", argv0);
  char *s = strrchr(exe, '/');
  if (s) *s = 0; else snprintf(exe, sizeof exe, ".");
  s = strrchr(exe, '/');
  if (s) *s = 0; else snprintf(exe, sizeof exe, "..");
  snprintf(home, n, "%s", exe);
}

int main(int argc, char **argv) {
  char home[PATH_MAX];
  find_home(argv[0], home, sizeof home);
  lua_State *L = luaL_newstate();
  if (!L) { fprintf(stderr, "gen: out of memory\n"); return 1; }
  luaL_openlibs(L);

  static const luaL_Reg mf[] = {
    {"nvrtc", l_nvrtc}, {"nvrtc_version", l_nvrtc_version}, {"publish", l_publish},
    {"read", l_read}, {"write_atomic", l_write_atomic}, {"list", l_list}, {"clock", l_clock}, {NULL, NULL}};
  luaL_newlib(L, mf);
  lua_pushstring(L, home);
  lua_setfield(L, -2, "home");
  lua_setglobal(L, "mf");

  /* gen/<module>.lua files are found through package.path; specs never see `require` (config.lua sandboxes them) */
  char code[PATH_MAX + 64];
  snprintf(code, sizeof code, "package.path = '%s/gen/?.lua'", home);
  if (luaL_dostring(L, code) != LUA_OK) { fprintf(stderr, "gen: %s\n", lua_tostring(L, -1)); return 1; }

  lua_newtable(L);
  for (int i = 1; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i); }
  lua_setglobal(L, "arg");

  char driver[PATH_MAX + 32];
  snprintf(driver, sizeof driver, "%s/gen/driver.lua", home);
  if (luaL_loadfile(L, driver) != LUA_OK) {
    fprintf(stderr, "gen: %s\n", lua_tostring(L, -1));
    return 1;
  }
  /* driver.lua returns an exit code; errors raised as {code=, msg=} tables are user errors */
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "msg");
      lua_getfield(L, -2, "code");
      int c = (int)lua_tointeger(L, -1);
      fprintf(stderr, "%s\n", lua_tostring(L, -2));
      return c ? c : 1;
    }
    fprintf(stderr, "gen: internal error: %s\n", lua_tostring(L, -1));
    return 1;
  }
  int rc = (int)lua_tointeger(L, -1);
  lua_close(L);
  return rc;
}
