/*
 * TEST DOUBLE: a fake libvixDiskLib.so for pilotlight's tests.
 *
 * This is NOT VMware's VDDK. It exports the VixDiskLib_* symbols that pilotlight's
 * koffi binding calls, with the struct layouts of VDDK 7/8 on x86_64
 * (VixDiskLibConnectParams = 128 bytes, VixDiskLibInfo = 64 bytes), and serves reads
 * from plain local files, so the binding and the worker process can be tested
 * without the proprietary library.
 *
 * Environment (read at InitEx):
 *   FAKE_VDDK_ROOT        directory holding disk files:
 *                         $ROOT/<snapshotRef>/<disk path with every char outside
 *                         [A-Za-z0-9._-] replaced by '_'>  (snapshotRef "" -> "base")
 *   FAKE_VDDK_LOG         append one line per call to this file
 *   FAKE_VDDK_USER, FAKE_VDDK_PASSWORD, FAKE_VDDK_THUMBPRINT
 *                         when set, ConnectEx refuses other credentials / thumbprints
 *   FAKE_VDDK_FAIL_READ_AT  byte offset: any read covering it fails (VIX_E_FILE_ERROR)
 *   FAKE_VDDK_READ_DELAY_US sleep this long in each read (to keep reads in flight)
 *   FAKE_VDDK_CRASH_READ_AT byte offset: a read covering it abort()s the process
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

typedef uint64_t VixError;
#define VIX_OK 0
#define VIX_E_FAIL 1
#define VIX_E_INVALID_ARG 3
#define VIX_E_FILE_NOT_FOUND 4
#define VIX_E_FILE_ERROR 7
#define VIX_E_NOT_SUPPORTED 6
#define VIX_E_FAKE_BAD_LOGIN 3015          /* code chosen by this test double */
#define VIX_E_FAKE_THUMBPRINT 30009        /* code chosen by this test double */
#define VIX_E_FAKE_NOT_INITIALIZED 16050   /* code chosen by this test double */
#define VIX_ASYNC 25000

typedef void VixDiskLibGenericLogFunc(const char *fmt, va_list args);
typedef void (*VixDiskLibCompletionCB)(void *data, VixError result);

struct VixDiskLibVStorageObjectSpec { char *id; char *datastoreMoRef; char *ssId; };

typedef struct VixDiskLibConnectParams {
  char *vmxSpec;
  char *serverName;
  char *thumbPrint;
  long reserved1;
  int credType;
  union {
    struct { char *userName; char *password; } uid;
    struct { char *cookie; char *userName; char *key; } sessionId;
    void *reserved2;
  } creds;
  uint32_t port;
  uint32_t nfcHostPort;
  char *reserved3;
  char reserved4[8];
  void *reserved5;
  union { struct VixDiskLibVStorageObjectSpec vStorageObjSpec; } spec;
  int specType;
} VixDiskLibConnectParams;

struct VixDiskLibGeometry { uint32_t cylinders, heads, sectors; };

typedef struct VixDiskLibInfo {
  struct VixDiskLibGeometry biosGeo;
  struct VixDiskLibGeometry physGeo;
  uint64_t capacity;
  int adapterType;
  int numLinks;
  char *parentFileNameHint;
  char *uuid;
  uint32_t logicalSectorSize;
  uint32_t physicalSectorSize;
} VixDiskLibInfo;

typedef struct { uint64_t offset; uint64_t length; } VixDiskLibBlock;
typedef struct { uint32_t numBlocks; VixDiskLibBlock blocks[1]; } VixDiskLibBlockList;

_Static_assert(sizeof(VixDiskLibConnectParams) == 128, "ConnectParams must be 128 bytes");
_Static_assert(sizeof(VixDiskLibInfo) == 64, "Info must be 64 bytes");

struct fake_conn { uint32_t magic; char *snapshot; char *transport; };
struct fake_handle {
  uint32_t magic; int fd; uint64_t size; char *path;
  pthread_mutex_t lock; int pending; pthread_cond_t done;
};
#define CONN_MAGIC 0xC0CC0CC0u
#define HANDLE_MAGIC 0x4A4D4A4Du

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static int64_t fail_at = -1;
static int64_t crash_at = -1;
static unsigned read_delay_us;

static void logf_(const char *fmt, ...) {
  const char *path = getenv("FAKE_VDDK_LOG");
  if (!path || !*path) return;
  pthread_mutex_lock(&log_lock);
  FILE *f = fopen(path, "a");
  if (f) {
    va_list ap; va_start(ap, fmt); vfprintf(f, fmt, ap); va_end(ap);
    fputc('\n', f); fclose(f);
  }
  pthread_mutex_unlock(&log_lock);
}

VixError VixDiskLib_InitEx(uint32_t major, uint32_t minor, VixDiskLibGenericLogFunc *log,
                           VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic,
                           const char *libDir, const char *configFile) {
  (void)log; (void)warn; (void)panic;
  const char *f = getenv("FAKE_VDDK_FAIL_READ_AT");
  fail_at = (f && *f) ? strtoll(f, NULL, 10) : -1;
  const char *c = getenv("FAKE_VDDK_CRASH_READ_AT");
  crash_at = (c && *c) ? strtoll(c, NULL, 10) : -1;
  const char *d = getenv("FAKE_VDDK_READ_DELAY_US");
  read_delay_us = (d && *d) ? (unsigned)strtoul(d, NULL, 10) : 0;
  logf_("InitEx %u.%u libDir=%s config=%s", major, minor, libDir ? libDir : "(null)",
        configFile ? configFile : "(null)");
  if (major < 6) return VIX_E_NOT_SUPPORTED;
  initialized = 1;
  return VIX_OK;
}

void VixDiskLib_Exit(void) { logf_("Exit"); initialized = 0; }

static const char *error_text(VixError err) {
  switch (err & 0xFFFF) {
  case VIX_OK: return "The operation was successful";
  case VIX_E_FAIL: return "Unknown error";
  case VIX_E_INVALID_ARG: return "One of the parameters was invalid";
  case VIX_E_FILE_NOT_FOUND: return "The system cannot find the file specified";
  case VIX_E_FILE_ERROR: return "A file access error occurred on the host or guest operating system";
  case VIX_E_NOT_SUPPORTED: return "The operation is not supported for the specified parameters";
  case VIX_E_FAKE_BAD_LOGIN: return "Cannot connect to the host: the user name or password is incorrect";
  case VIX_E_FAKE_THUMBPRINT: return "SSL thumbprint verification failed: the server's certificate does not match the thumbprint given";
  case VIX_E_FAKE_NOT_INITIALIZED: return "The library was not initialized (call VixDiskLib_InitEx first)";
  default: return "Unknown error code";
  }
}

char *VixDiskLib_GetErrorText(VixError err, const char *locale) {
  (void)locale;
  char buf[512];
  snprintf(buf, sizeof buf, "%s [fake VDDK test double, code %llu]", error_text(err),
           (unsigned long long)err);
  logf_("GetErrorText %llu", (unsigned long long)err);
  return strdup(buf);
}

void VixDiskLib_FreeErrorText(char *text) { logf_("FreeErrorText"); free(text); }

VixError VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *p, const char *identity) {
  logf_("PrepareForAccess vmx=%s identity=%s", p && p->vmxSpec ? p->vmxSpec : "(null)",
        identity ? identity : "(null)");
  return initialized ? VIX_OK : VIX_E_FAKE_NOT_INITIALIZED;
}

VixError VixDiskLib_EndAccess(const VixDiskLibConnectParams *p, const char *identity) {
  logf_("EndAccess vmx=%s identity=%s", p && p->vmxSpec ? p->vmxSpec : "(null)",
        identity ? identity : "(null)");
  return initialized ? VIX_OK : VIX_E_FAKE_NOT_INITIALIZED;
}

static int env_mismatch(const char *var, const char *given, int caseless) {
  const char *want = getenv(var);
  if (!want || !*want) return 0;
  if (!given) return 1;
  return caseless ? strcasecmp(want, given) != 0 : strcmp(want, given) != 0;
}

VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *p, char readOnly,
                              const char *snapshotRef, const char *transportModes,
                              struct fake_conn **out) {
  if (!initialized) return VIX_E_FAKE_NOT_INITIALIZED;
  if (!p || !out) return VIX_E_INVALID_ARG;
  logf_("ConnectEx server=%s port=%u vmx=%s thumb=%s user=%s ro=%d snapshot=%s transport=%s",
        p->serverName ? p->serverName : "(null)", p->port, p->vmxSpec ? p->vmxSpec : "(null)",
        p->thumbPrint ? p->thumbPrint : "(null)",
        p->credType == 1 && p->creds.uid.userName ? p->creds.uid.userName : "(null)",
        readOnly, snapshotRef ? snapshotRef : "(null)", transportModes ? transportModes : "(null)");
  if (p->credType != 1) return VIX_E_INVALID_ARG;
  if (env_mismatch("FAKE_VDDK_THUMBPRINT", p->thumbPrint, 1)) return VIX_E_FAKE_THUMBPRINT;
  if (env_mismatch("FAKE_VDDK_USER", p->creds.uid.userName, 0) ||
      env_mismatch("FAKE_VDDK_PASSWORD", p->creds.uid.password, 0))
    return VIX_E_FAKE_BAD_LOGIN;
  struct fake_conn *c = calloc(1, sizeof *c);
  c->magic = CONN_MAGIC;
  c->snapshot = strdup(snapshotRef && *snapshotRef ? snapshotRef : "base");
  c->transport = strdup(transportModes && *transportModes ? transportModes : "nbd");
  *out = c;
  logf_("ConnectEx ok conn=%p", (void *)c);
  return VIX_OK;
}

VixError VixDiskLib_Disconnect(struct fake_conn *c) {
  logf_("Disconnect conn=%p", (void *)c);
  if (!c || c->magic != CONN_MAGIC) return VIX_E_INVALID_ARG;
  c->magic = 0; free(c->snapshot); free(c->transport); free(c);
  return VIX_OK;
}

VixError VixDiskLib_Open(struct fake_conn *c, const char *path, uint32_t flags,
                         struct fake_handle **out) {
  if (!c || c->magic != CONN_MAGIC || !path || !out) return VIX_E_INVALID_ARG;
  const char *root = getenv("FAKE_VDDK_ROOT");
  if (!root) root = ".";
  char name[1024]; size_t i;
  for (i = 0; path[i] && i < sizeof name - 1; i++) {
    char ch = path[i];
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '.' || ch == '-' || ch == '_';
    name[i] = ok ? ch : '_';
  }
  name[i] = 0;
  char full[4096];
  snprintf(full, sizeof full, "%s/%s/%s", root, c->snapshot, name);
  int fd = open(full, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    logf_("Open failed path=%s file=%s errno=%d", path, full, errno);
    return VIX_E_FILE_NOT_FOUND;
  }
  struct stat st; fstat(fd, &st);
  struct fake_handle *h = calloc(1, sizeof *h);
  h->magic = HANDLE_MAGIC; h->fd = fd; h->size = (uint64_t)st.st_size; h->path = strdup(path);
  pthread_mutex_init(&h->lock, NULL); pthread_cond_init(&h->done, NULL);
  *out = h;
  logf_("Open ok handle=%p path=%s flags=%u file=%s", (void *)h, path, flags, full);
  return VIX_OK;
}

static int valid(struct fake_handle *h) { return h && h->magic == HANDLE_MAGIC; }

const char *VixDiskLib_GetTransportMode(struct fake_handle *h) { (void)h; return "nbdssl"; }

VixError VixDiskLib_GetInfo(struct fake_handle *h, VixDiskLibInfo **info) {
  if (!valid(h) || !info) return VIX_E_INVALID_ARG;
  VixDiskLibInfo *in = calloc(1, sizeof *in);
  in->capacity = h->size / 512;
  in->adapterType = 3;
  in->numLinks = 1;
  in->logicalSectorSize = 512;
  in->physicalSectorSize = 512;
  in->uuid = strdup("60 00 C2 9f ak fa ke 00-00 00 00 00 00 00 00 00");
  *info = in;
  logf_("GetInfo handle=%p sectors=%llu", (void *)h, (unsigned long long)in->capacity);
  return VIX_OK;
}

void VixDiskLib_FreeInfo(VixDiskLibInfo *info) {
  logf_("FreeInfo");
  if (info) { free(info->uuid); free(info->parentFileNameHint); free(info); }
}

static VixError do_read(struct fake_handle *h, uint64_t start, uint64_t n, unsigned char *buf) {
  if (read_delay_us) usleep(read_delay_us);
  uint64_t off = start * 512, len = n * 512;
  if (crash_at >= 0 && (uint64_t)crash_at >= off && (uint64_t)crash_at < off + len) {
    logf_("Read crash injected handle=%p", (void *)h);
    abort();
  }
  if (fail_at >= 0 && (uint64_t)fail_at >= off && (uint64_t)fail_at < off + len) {
    logf_("Read fault injected handle=%p sector=%llu count=%llu", (void *)h,
          (unsigned long long)start, (unsigned long long)n);
    return VIX_E_FILE_ERROR;
  }
  if (off + len > h->size) return VIX_E_INVALID_ARG;
  uint64_t done = 0;
  while (done < len) {
    ssize_t r = pread(h->fd, buf + done, len - done, (off_t)(off + done));
    if (r <= 0) return VIX_E_FILE_ERROR;
    done += (uint64_t)r;
  }
  return VIX_OK;
}

VixError VixDiskLib_Read(struct fake_handle *h, uint64_t start, uint64_t n, unsigned char *buf) {
  if (!valid(h) || !buf) return VIX_E_INVALID_ARG;
  logf_("Read handle=%p sector=%llu count=%llu", (void *)h, (unsigned long long)start,
        (unsigned long long)n);
  return do_read(h, start, n, buf);
}

struct async_req {
  struct fake_handle *h; uint64_t start, n; unsigned char *buf;
  VixDiskLibCompletionCB cb; void *data;
};

static void *async_main(void *arg) {
  struct async_req *r = arg;
  VixError e = do_read(r->h, r->start, r->n, r->buf);
  r->cb(r->data, e);
  pthread_mutex_lock(&r->h->lock);
  r->h->pending--;
  pthread_cond_broadcast(&r->h->done);
  pthread_mutex_unlock(&r->h->lock);
  free(r);
  return NULL;
}

/* Completes on a thread of its own, as the real library does. */
VixError VixDiskLib_ReadAsync(struct fake_handle *h, uint64_t start, uint64_t n,
                              unsigned char *buf, VixDiskLibCompletionCB cb, void *data) {
  if (!valid(h) || !buf || !cb) return VIX_E_INVALID_ARG;
  logf_("ReadAsync handle=%p sector=%llu count=%llu", (void *)h, (unsigned long long)start,
        (unsigned long long)n);
  struct async_req *r = calloc(1, sizeof *r);
  r->h = h; r->start = start; r->n = n; r->buf = buf; r->cb = cb; r->data = data;
  pthread_mutex_lock(&h->lock); h->pending++; pthread_mutex_unlock(&h->lock);
  pthread_t t;
  pthread_attr_t a; pthread_attr_init(&a); pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &a, async_main, r) != 0) {
    pthread_mutex_lock(&h->lock); h->pending--; pthread_mutex_unlock(&h->lock);
    free(r); return VIX_E_FAIL;
  }
  pthread_attr_destroy(&a);
  return VIX_ASYNC;
}

VixError VixDiskLib_Wait(struct fake_handle *h) {
  if (!valid(h)) return VIX_E_INVALID_ARG;
  pthread_mutex_lock(&h->lock);
  while (h->pending > 0) pthread_cond_wait(&h->done, &h->lock);
  pthread_mutex_unlock(&h->lock);
  logf_("Wait handle=%p", (void *)h);
  return VIX_OK;
}

/* Allocated = 64 KiB-aligned chunks that are not all zero, in [start, start+n) sectors. */
VixError VixDiskLib_QueryAllocatedBlocks(struct fake_handle *h, uint64_t start, uint64_t n,
                                         uint64_t chunk, VixDiskLibBlockList **out) {
  if (!valid(h) || !out || chunk < 128) return VIX_E_INVALID_ARG;
  logf_("QueryAllocatedBlocks handle=%p sector=%llu count=%llu chunk=%llu", (void *)h,
        (unsigned long long)start, (unsigned long long)n, (unsigned long long)chunk);
  uint64_t cap = 16, cnt = 0;
  VixDiskLibBlockList *l = malloc(sizeof(uint32_t) * 2 + cap * sizeof(VixDiskLibBlock));
  unsigned char *buf = malloc(chunk * 512);
  for (uint64_t s = start; s < start + n; s += chunk) {
    uint64_t m = (start + n - s) < chunk ? (start + n - s) : chunk;
    ssize_t r = pread(h->fd, buf, m * 512, (off_t)(s * 512));
    int nz = 0;
    for (ssize_t i = 0; i < r; i++) if (buf[i]) { nz = 1; break; }
    if (!nz) continue;
    if (cnt && l->blocks[cnt - 1].offset + l->blocks[cnt - 1].length == s) {
      l->blocks[cnt - 1].length += m; continue;
    }
    if (cnt == cap) {
      cap *= 2;
      l = realloc(l, sizeof(uint32_t) * 2 + cap * sizeof(VixDiskLibBlock));
    }
    l->blocks[cnt].offset = s; l->blocks[cnt].length = m; cnt++;
  }
  free(buf);
  l->numBlocks = (uint32_t)cnt;
  *out = l;
  return VIX_OK;
}

VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *l) { logf_("FreeBlockList"); free(l); return VIX_OK; }

VixError VixDiskLib_Close(struct fake_handle *h) {
  logf_("Close handle=%p", (void *)h);
  if (!valid(h)) return VIX_E_INVALID_ARG;
  pthread_mutex_lock(&h->lock);
  int pending = h->pending;
  pthread_mutex_unlock(&h->lock);
  if (pending) logf_("Close with %d reads pending handle=%p", pending, (void *)h);
  h->magic = 0; close(h->fd); free(h->path); free(h);
  return VIX_OK;
}
