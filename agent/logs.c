/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#include "hashmap.h"
#include "list.h"
#include "log.h"
#include "logs.h"
#include "banned.h"

/* "<name>.log.<n>" */
#define FILE_NAME_MAX (ORCH_LOGS_NAME_MAX + sizeof ".log." + 10)
/* Rounds of "copy what was appended during the last copy" before the truncation: a writer
 * faster than an in-kernel copy could otherwise keep one rotation going forever. */
#define COPY_ROUNDS 4
/* How often a follower polls when inotify is unavailable (watch limit reached, say). */
#define FOLLOW_POLL_MS 250
/* Chunks a follower delivers per loop iteration before it lets the other handles run. */
#define FOLLOW_CHUNKS_PER_TURN 4
#define TAIL_READ_CHUNK        8192

struct orch_logs {
        uv_loop_t *loop;
        uv_timer_t timer; /* rotation; its close callback frees the struct */
        char *dir;
        int dirfd;
        struct orch_hmap files;     /* struct orch_log_file by instance name */
        struct orch_list followers; /* struct orch_log_follower */
};

struct orch_log_file {
        struct orch_hmap_node node;
        struct orch_logs *logs;
        int fd;
        uint64_t max_size;
        uint32_t max_files;
        int last_error; /* of the timer's last rotation: logged when it changes, not every period */
        char name[];
};

struct orch_log_follower {
        struct orch_list link; /* in logs->followers until cancelled */
        struct orch_logs *logs;
        /* New bytes are noticed by inotify; when it cannot watch (the per-user watch limit,
         * say), the event handle is closed and the file polled instead. */
        uv_fs_event_t event;
        uv_fs_poll_t poll;
        bool polling;
        uv_timer_t kick; /* continues reading on the next loop iteration */
        int fd;          /* the live file, read-only; copy-truncate keeps its inode */
        /* Position: `src` 0 is the live file, n the rotated file <name>.log.n. */
        unsigned src;
        uint64_t offset;
        bool paused;
        bool ended;
        bool cancelled;
        unsigned n_handles;
        orch_logs_follow_cb cb;
        void *userdata;
        char name[ORCH_LOGS_NAME_MAX + 1];
        char buf[ORCH_LOGS_FOLLOW_CHUNK];
};

static bool name_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > ORCH_LOGS_NAME_MAX || !isalnum((unsigned char)s[0]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
                        return false;
        return true;
}

/* index 0: "<name>.log"; n: "<name>.log.n". Cannot truncate: name_valid() bounds the name. */
static void file_name(char *buf, const char *name, unsigned index)
{
        if (index == 0)
                (void)orch_snprintf(buf, FILE_NAME_MAX, "%s.log", name);
        else
                (void)orch_snprintf(buf, FILE_NAME_MAX, "%s.log.%u", name, index);
}

/* pread until `len` bytes or the end of the file; returns the count. */
static ssize_t pread_full(int fd, char *buf, size_t len, uint64_t off)
{
        size_t done = 0;

        while (done < len) {
                ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        return (ssize_t)done;
}

/* Followers */

static void follower_pump(struct orch_log_follower *f);

static void on_follower_close(uv_handle_t *h)
{
        struct orch_log_follower *f = h->data;

        if (--f->n_handles == 0)
                free(f);
}

static void follower_stop_watching(struct orch_log_follower *f)
{
        if (f->polling)
                uv_fs_poll_stop(&f->poll);
        else
                uv_fs_event_stop(&f->event);
        uv_timer_stop(&f->kick);
}

/* Delivers the end, once; the follower then waits to be cancelled. */
static void follower_end(struct orch_log_follower *f, int r)
{
        if (f->ended || f->cancelled)
                return;
        f->ended = true;
        follower_stop_watching(f);
        f->cb(f, NULL, 0, r, f->userdata);
}

static void on_kick(uv_timer_t *t)
{
        follower_pump(t->data);
}

static void follower_kick(struct orch_log_follower *f)
{
        if (!f->ended && !f->cancelled && !f->paused)
                uv_timer_start(&f->kick, on_kick, 0, 0);
}

/* Reads the next chunk at the follower's position into f->buf: > 0 bytes read, 0 nothing new
 * (caught up with the live file), -errno. Moves on from a rotated file that is finished (or
 * gone) to the next newer one. */
static ssize_t follower_read(struct orch_log_follower *f)
{
        for (;;) {
                struct stat st;
                ssize_t n;

                if (f->src > 0) {
                        char fn[FILE_NAME_MAX];
                        int fd;

                        file_name(fn, f->name, f->src);
                        fd = openat(f->logs->dirfd, fn, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                        if (fd < 0 && errno != ENOENT)
                                return -errno;
                        /* Gone (removed by a later rotation while we were paused): what it held is
                         * lost to us; go on with the next newer file. */
                        n = fd < 0 ? 0 : pread_full(fd, f->buf, sizeof f->buf, f->offset);
                        if (fd >= 0)
                                close(fd);
                        if (n != 0)
                                return n;
                        f->src--;
                        f->offset = 0;
                        continue;
                }
                if (fstat(f->fd, &st) < 0)
                        return -errno;
                /* Shrunk without a rotation of ours (truncated by hand): start over. */
                if ((uint64_t)st.st_size < f->offset)
                        f->offset = 0;
                return pread_full(f->fd, f->buf, MIN(sizeof f->buf, (uint64_t)st.st_size - f->offset),
                                  f->offset);
        }
}

static void follower_pump(struct orch_log_follower *f)
{
        for (unsigned i = 0; i < FOLLOW_CHUNKS_PER_TURN; i++) {
                ssize_t n;

                if (f->ended || f->cancelled || f->paused)
                        return;
                n = follower_read(f);
                if (n < 0) {
                        follower_end(f, (int)n);
                        return;
                }
                if (n == 0)
                        return;
                f->offset += (uint64_t)n;
                f->cb(f, f->buf, (size_t)n, 0, f->userdata);
        }
        /* More may be waiting; inotify will not tell again about what is already written. */
        follower_kick(f);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
        struct orch_log_follower *f = h->data;

        if (status < 0) {
                follower_end(f, status);
                return;
        }
        follower_pump(f);
}

static void on_fs_poll(uv_fs_poll_t *h, int status, const uv_stat_t *prev, const uv_stat_t *curr)
{
        struct orch_log_follower *f = h->data;

        /* A failed stat (the file removed by hand) is not the end: the instance may still write
         * to it through its descriptor, which is what we read. */
        follower_pump(f);
}

/* A rotation of f's log moved the first `copied` bytes of the live file into <name>.log.1 and
 * truncated the live file; rotated files moved up by one, the oldest beyond max_files - 1 gone. */
static void follower_rotated(struct orch_log_follower *f, uint64_t copied, uint32_t max_files)
{
        if (f->src == 0) {
                if (max_files > 1 && f->offset < copied)
                        f->src = 1; /* the rest of what it had not read is in the copy, same offsets */
                else
                        f->offset = 0;
        } else if (f->src + 1 < max_files) {
                f->src++;
        } else {
                /* What it was reading has been dropped: the oldest kept file is next. */
                f->src = max_files - 1;
                f->offset = 0;
        }
        follower_kick(f);
}

static void close_handle(uv_handle_t *h)
{
        if (!uv_is_closing(h))
                uv_close(h, on_follower_close);
}

int orch_logs_follow(struct orch_logs *l, const char *instance, uint64_t offset, orch_logs_follow_cb cb,
                     void *userdata, struct orch_log_follower **ret)
{
        char fn[FILE_NAME_MAX];
        _cleanup_(freep) char *path = NULL;
        _cleanup_(closep) int fd = -1;
        struct orch_log_follower *f;
        struct stat st;
        int r;

        if (!name_valid(instance) || !cb)
                return -EINVAL;
        file_name(fn, instance, 0);
        fd = openat(l->dirfd, fn, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        path = orch_strdup_printf("%s/%s", l->dir, fn);
        if (!path)
                return -ENOMEM;

        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->logs = l;
        f->cb = cb;
        f->userdata = userdata;
        f->fd = TAKE_FD(fd);
        f->offset = offset == ORCH_LOGS_FOLLOW_END ? (uint64_t)st.st_size : offset;
        orch_strlcpy(f->name, instance, sizeof f->name);

        /* From here on the follower is freed by its close callbacks, so the error paths close
         * the handles initialised so far. */
        uv_timer_init(l->loop, &f->kick);
        f->kick.data = f;
        f->n_handles++;
        uv_fs_event_init(l->loop, &f->event);
        f->event.data = f;
        f->n_handles++;
        r = uv_fs_event_start(&f->event, on_fs_event, path, 0);
        if (r < 0) {
                log_debug("following %s: inotify unavailable (%s), polling every %ums", path, uv_strerror(r),
                          FOLLOW_POLL_MS);
                close_handle((uv_handle_t *)&f->event);
                uv_fs_poll_init(l->loop, &f->poll);
                f->poll.data = f;
                f->n_handles++;
                f->polling = true;
                r = uv_fs_poll_start(&f->poll, on_fs_poll, path, FOLLOW_POLL_MS);
                if (r < 0) {
                        f->cancelled = true;
                        close(f->fd);
                        close_handle((uv_handle_t *)&f->poll);
                        close_handle((uv_handle_t *)&f->kick);
                        return r;
                }
        }
        orch_list_append(&l->followers, &f->link);
        /* Whatever is already there past `offset` is delivered without waiting for a write. */
        follower_kick(f);
        *ret = f;
        return 0;
}

void orch_logs_follower_pause(struct orch_log_follower *f)
{
        f->paused = true;
        uv_timer_stop(&f->kick);
}

void orch_logs_follower_resume(struct orch_log_follower *f)
{
        if (!f->paused)
                return;
        f->paused = false;
        follower_kick(f);
}

void orch_logs_follower_cancel(struct orch_log_follower *f)
{
        if (!f || f->cancelled)
                return;
        f->cancelled = true;
        orch_list_remove(&f->link);
        close(f->fd);
        f->fd = -1;
        close_handle((uv_handle_t *)&f->kick);
        close_handle((uv_handle_t *)&f->event);
        if (f->polling)
                close_handle((uv_handle_t *)&f->poll);
}

static void notify_rotated(struct orch_logs *l, const char *name, uint64_t copied, uint32_t max_files)
{
        struct orch_list *i;

        orch_list_foreach(i, &l->followers) {
                struct orch_log_follower *f = orch_list_entry(i, struct orch_log_follower, link);
                if (!f->ended && streq(f->name, name))
                        follower_rotated(f, copied, max_files);
        }
}

/* Rotation */

/* Copies [*off, end) of `in` to the current position of `out` in the kernel. */
static int copy_range(int in, int out, uint64_t *off, uint64_t end)
{
        while (*off < end) {
                size_t len = (size_t)MIN(end - *off, (uint64_t)1 << 30);
                loff_t o = (loff_t)*off;
                ssize_t n = copy_file_range(in, &o, out, NULL, len, 0);

                if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                        /* A file system without copy_file_range: sendfile is as good a copy. */
                        off_t so = (off_t)*off;
                        n = sendfile(out, in, &so, len);
                }
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break; /* shrunk under us (truncated by hand): nothing more to copy */
                *off += (uint64_t)n;
        }
        return 0;
}

/* Renames <name>.log.(max_files-2) ... .1 one up, dropping the oldest. */
static int shift_rotated(struct orch_log_file *f)
{
        int dirfd = f->logs->dirfd;
        char a[FILE_NAME_MAX], b[FILE_NAME_MAX];

        file_name(a, f->name, f->max_files - 1);
        if (unlinkat(dirfd, a, 0) < 0 && errno != ENOENT)
                return -errno;
        for (unsigned i = f->max_files - 2; i >= 1; i--) {
                file_name(a, f->name, i);
                file_name(b, f->name, i + 1);
                if (renameat(dirfd, a, dirfd, b) < 0 && errno != ENOENT)
                        return -errno;
        }
        return 0;
}

/*
 * Copy-truncate. The copy goes to <name>.log.tmp first and the rotated files are shifted only
 * once the live file is truncated: a copy that fails (a full disk) then leaves the rotated files
 * as they were, rather than shifting them once per period until the history is gone.
 * *ret_truncated tells whether the live file was cut (then *ret_copied bytes of it went to the
 * copy), also when a later step failed.
 */
static int rotate(struct orch_log_file *f, uint64_t size, uint64_t *ret_copied, bool *ret_truncated)
{
        int dirfd = f->logs->dirfd;
        char tmp[FILE_NAME_MAX], first[FILE_NAME_MAX], self[64];
        _cleanup_(closep) int in = -1, out = -1;
        uint64_t off = 0, end = size;
        int r;

        *ret_truncated = false;
        if (f->max_files <= 1) {
                /* Nowhere to keep old lines: the limit wins. */
                if (ftruncate(f->fd, 0) < 0)
                        return -errno;
                *ret_copied = size;
                *ret_truncated = true;
                return 0;
        }
        (void)orch_snprintf(tmp, sizeof tmp, "%s.log.tmp", f->name);
        out = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
        if (out < 0)
                return -errno;
        /* A readable descriptor of the very inode the instance writes to, even if the path was
         * replaced by hand: the agent's own is write-only (and so is the instance's). */
        (void)orch_snprintf(self, sizeof self, "/proc/self/fd/%d", f->fd);
        in = open(self, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
                r = -errno;
                goto fail_copy;
        }

        /* Copy, then copy what was appended meanwhile, until a look at the size finds nothing new;
         * the truncation follows right after that look, so only what is written in between (a
         * couple of system calls) is lost. */
        for (unsigned round = 0;; round++) {
                struct stat st;

                r = copy_range(in, out, &off, end);
                if (r < 0)
                        goto fail_copy;
                if (fstat(f->fd, &st) < 0) {
                        r = -errno;
                        goto fail_copy;
                }
                if ((uint64_t)st.st_size <= off || round + 1 >= COPY_ROUNDS)
                        break;
                end = (uint64_t)st.st_size;
        }
        if (ftruncate(f->fd, 0) < 0) {
                r = -errno;
                goto fail_copy;
        }
        *ret_copied = off;
        *ret_truncated = true;

        /* The lines now live only in the temporary copy. If a rename fails here (an I/O error),
         * the copy stays under its temporary name until the next rotation reuses it. */
        r = shift_rotated(f);
        if (r < 0)
                return r;
        file_name(first, f->name, 1);
        if (renameat(dirfd, tmp, dirfd, first) < 0)
                return -errno;
        return 0;

fail_copy:
        (void)unlinkat(dirfd, tmp, 0);
        return r;
}

int orch_logs_check(struct orch_log_file *f)
{
        struct stat st;
        uint64_t copied = 0;
        bool truncated;
        int r;

        if (fstat(f->fd, &st) < 0)
                return -errno;
        if ((uint64_t)st.st_size <= f->max_size)
                return 0;
        r = rotate(f, (uint64_t)st.st_size, &copied, &truncated);
        /* Followers must hear of a truncation even when a later step failed, or they would wait
         * at an offset the live file no longer reaches. */
        if (truncated)
                notify_rotated(f->logs, f->name, copied, f->max_files);
        if (r < 0)
                return r;
        log_debug("rotated log of %s: %" PRIu64 " bytes to %s.log.1", f->name, copied, f->name);
        return 1;
}

static void on_rotate_timer(uv_timer_t *t)
{
        struct orch_logs *l = container_of(t, struct orch_logs, timer);
        struct orch_hmap_iter it;

        for (struct orch_hmap_node *n = orch_hmap_first(&l->files, &it); n;
             n = orch_hmap_next(&l->files, &it)) {
                struct orch_log_file *f = container_of(n, struct orch_log_file, node);
                int r = orch_logs_check(f);

                if (r >= 0) {
                        if (f->last_error < 0)
                                orch_log(ORCH_LOG_INFO, &(struct orch_log_ctx){.instance = f->name},
                                         "log rotation works again in %s", l->dir);
                        f->last_error = 0;
                        continue;
                }
                /* A full disk fails every period for every instance: say it once per change. */
                if (r != f->last_error)
                        orch_log_errno(ORCH_LOG_WARN, &(struct orch_log_ctx){.instance = f->name}, r,
                                       "rotating %s/%s.log", l->dir, f->name);
                f->last_error = r;
        }
}

/* Files */

static struct orch_log_file *file_free(struct orch_log_file *f)
{
        if (!f)
                return NULL;
        if (f->fd >= 0)
                close(f->fd);
        free(f);
        return NULL;
}

/* Removes rotated files at max_files and above: left by an earlier, larger max_files. */
static void remove_stale_rotated(struct orch_logs *l, const char *name, uint32_t max_files)
{
        char fn[FILE_NAME_MAX];

        for (unsigned i = MAX(max_files, 1u); i <= ORCH_LOGS_MAX_FILES; i++) {
                file_name(fn, name, i);
                if (unlinkat(l->dirfd, fn, 0) < 0)
                        break;
        }
}

int orch_logs_open(struct orch_logs *l, const char *instance, uint64_t max_size, uint32_t max_files,
                   struct orch_log_file **ret)
{
        char fn[FILE_NAME_MAX];
        struct orch_log_file *f;
        size_t n;
        int r;

        if (!name_valid(instance) || max_size == 0 || max_files < 1 || max_files > ORCH_LOGS_MAX_FILES)
                return -EINVAL;
        if (orch_hmap_get(&l->files, instance))
                return -EBUSY;
        n = strlen(instance);
        f = calloc(1, sizeof *f + n + 1);
        if (!f)
                return -ENOMEM;
        memcpy(f->name, instance, n + 1);
        f->logs = l;
        f->max_size = max_size;
        f->max_files = max_files;
        file_name(fn, instance, 0);
        f->fd = openat(l->dirfd, fn, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
                       0640);
        if (f->fd < 0) {
                r = -errno;
                file_free(f);
                return r;
        }
        r = orch_hmap_insert(&l->files, &f->node, f->name);
        if (r < 0) {
                file_free(f);
                return r;
        }
        remove_stale_rotated(l, instance, max_files);
        /* A file left large by an earlier run is rotated before the instance adds to it. */
        r = orch_logs_check(f);
        if (r < 0)
                orch_log_errno(ORCH_LOG_WARN, &(struct orch_log_ctx){.instance = f->name}, r,
                               "rotating %s/%s", l->dir, fn);
        *ret = f;
        return 0;
}

int orch_logs_file_fd(const struct orch_log_file *f)
{
        return f->fd;
}

void orch_logs_close(struct orch_log_file *f)
{
        if (!f)
                return;
        orch_hmap_remove(&f->logs->files, &f->node);
        file_free(f);
}

/* "<name>.log", "<name>.log.<digits>" or the temporary copy of a rotation "<name>.log.tmp" */
static bool is_log_of(const char *entry, const char *name)
{
        const char *s = startswith(entry, name);

        if (!s || !(s = startswith(s, ".log")))
                return false;
        if (*s == '\0' || streq(s, ".tmp"))
                return true;
        if (*s != '.' || s[1] == '\0')
                return false;
        for (s++; *s; s++)
                if (!isdigit((unsigned char)*s))
                        return false;
        return true;
}

int orch_logs_remove(struct orch_logs *l, const char *instance)
{
        struct orch_list *i;
        DIR *d;
        struct dirent *de;
        int fd, r = 0, n = 0;

        if (!name_valid(instance))
                return -EINVAL;
        if (orch_hmap_get(&l->files, instance))
                return -EBUSY;
        /* The callback may cancel any follower: after each, walk again from the head. */
        for (bool more = true; more;) {
                more = false;
                orch_list_foreach(i, &l->followers) {
                        struct orch_log_follower *f = orch_list_entry(i, struct orch_log_follower, link);
                        if (!f->ended && streq(f->name, instance)) {
                                follower_end(f, 0);
                                more = true;
                                break;
                        }
                }
        }
        /* Every file named after the instance, not only up to the current max_files: an earlier
         * setting may have left more. */
        fd = openat(l->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return r;
        }
        while ((errno = 0, de = readdir(d))) {
                if (!is_log_of(de->d_name, instance))
                        continue;
                if (unlinkat(l->dirfd, de->d_name, 0) < 0 && errno != ENOENT) {
                        r = -errno;
                        break;
                }
                n++;
        }
        if (r == 0 && errno != 0)
                r = -errno;
        closedir(d);
        return r < 0 ? r : n;
}

/* Tail */

struct tail_pos {
        unsigned src; /* 0 live, n rotated */
        uint64_t off;
};

static int open_log(struct orch_logs *l, const char *name, unsigned src, uint64_t *ret_size)
{
        char fn[FILE_NAME_MAX];
        struct stat st;
        int fd;

        file_name(fn, name, src);
        fd = openat(l->dirfd, fn, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret_size = (uint64_t)st.st_size;
        return fd;
}

/* Scans backwards from the end of the stream .N ... .1, live (the live file up to live_size)
 * for the start of the last n_lines lines within max_bytes. */
static int tail_find_start(struct orch_logs *l, const char *name, int live_fd, uint64_t live_size,
                           size_t n_lines, size_t max_bytes, struct tail_pos *ret)
{
        char buf[TAIL_READ_CHUNK];
        struct tail_pos start = {0, 0};
        size_t found = 0, scanned = 0;
        unsigned src;
        bool last_byte = true;

        for (src = 0; src <= ORCH_LOGS_MAX_FILES; src++) {
                _cleanup_(closep) int rfd = -1;
                uint64_t size, pos;
                int fd;

                if (src == 0) {
                        fd = live_fd;
                        size = live_size;
                } else {
                        rfd = open_log(l, name, src, &size);
                        if (rfd == -ENOENT)
                                break; /* the oldest file starts the stream */
                        if (rfd < 0)
                                return rfd;
                        fd = rfd;
                }
                for (pos = size; pos > 0;) {
                        size_t chunk = (size_t)MIN(pos, (uint64_t)sizeof buf);
                        ssize_t n = pread_full(fd, buf, chunk, pos - chunk);

                        if (n < 0)
                                return (int)n;
                        if ((size_t)n != chunk)
                                return -EAGAIN; /* shrunk while we read: truncated by hand */
                        pos -= chunk;
                        for (size_t i = chunk; i-- > 0;) {
                                /* The newline that ends the stream ends the last line; it does not
                                 * separate it from another one. */
                                if (buf[i] == '\n' && !last_byte) {
                                        start = (struct tail_pos){src, pos + i + 1};
                                        if (++found == n_lines)
                                                goto done;
                                }
                                last_byte = false;
                                if (scanned == max_bytes) {
                                        /* Whole lines when at least one fits, else the end of
                                         * the one line that does not. */
                                        if (found == 0)
                                                start = (struct tail_pos){src, pos + i + 1};
                                        goto done;
                                }
                                scanned++;
                        }
                }
        }
        /* Fewer lines than asked for: all of them, from the start of the oldest file. */
        start = (struct tail_pos){src > 0 ? src - 1 : 0, 0};
done:
        *ret = start;
        return 0;
}

int orch_logs_tail(struct orch_logs *l, const char *instance, size_t n_lines, size_t max_bytes,
                   struct orch_buf *out, uint64_t *ret_end)
{
        _cleanup_(closep) int live = -1;
        struct tail_pos start;
        uint64_t live_size;
        int r;

        if (!name_valid(instance))
                return -EINVAL;
        live = open_log(l, instance, 0, &live_size);
        if (live < 0)
                return live;
        /* The live file keeps growing while we read: everything below works on this size, and
         * nothing else can rotate meanwhile (rotation runs on this thread). */
        if (n_lines > 0 && max_bytes > 0) {
                r = tail_find_start(l, instance, live, live_size, n_lines, max_bytes, &start);
                if (r < 0)
                        return r;
                for (unsigned src = start.src;; src--) {
                        _cleanup_(closep) int rfd = -1;
                        uint64_t size = live_size, off = src == start.src ? start.off : 0;
                        int fd = live;
                        ssize_t n;

                        if (src > 0) {
                                rfd = open_log(l, instance, src, &size);
                                if (rfd < 0)
                                        return rfd;
                                fd = rfd;
                        }
                        if (size > off) {
                                r = orch_buf_reserve(out, (size_t)(size - off));
                                if (r < 0)
                                        return r;
                                n = pread_full(fd, out->data + out->len, (size_t)(size - off), off);
                                if (n < 0)
                                        return (int)n;
                                out->len += (size_t)n;
                                out->data[out->len] = '\0';
                        }
                        if (src == 0)
                                break;
                }
        }
        if (ret_end)
                *ret_end = live_size;
        return 0;
}

/* The manager */

static void on_logs_timer_close(uv_handle_t *h)
{
        struct orch_logs *l = container_of((uv_timer_t *)h, struct orch_logs, timer);

        orch_hmap_release(&l->files);
        if (l->dirfd >= 0)
                close(l->dirfd);
        free(l->dir);
        free(l);
}

int orch_logs_new(uv_loop_t *loop, const char *data_dir, uint64_t period_ms, struct orch_logs **ret)
{
        _cleanup_(freep) char *dir = NULL;
        struct orch_logs *l;
        int r, dirfd;

        dir = orch_strdup_printf("%s/logs", data_dir);
        if (!dir)
                return -ENOMEM;
        r = orch_mkdir_p(dir, 0750);
        if (r < 0)
                return r;
        dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return -errno;
        l = calloc(1, sizeof *l);
        if (!l) {
                close(dirfd);
                return -ENOMEM;
        }
        l->loop = loop;
        l->dir = TAKE_PTR(dir);
        l->dirfd = dirfd;
        orch_list_init(&l->followers);
        uv_timer_init(loop, &l->timer);
        uv_timer_start(&l->timer, on_rotate_timer, period_ms ? period_ms : ORCH_LOGS_PERIOD_MS,
                       period_ms ? period_ms : ORCH_LOGS_PERIOD_MS);
        /* The timer must not keep a loop alive that has nothing else to do (a test, a shutdown). */
        uv_unref((uv_handle_t *)&l->timer);
        *ret = l;
        return 0;
}

void orch_logs_free(struct orch_logs *l)
{
        struct orch_hmap_iter it;
        struct orch_list *i, *tmp;

        if (!l)
                return;
        for (struct orch_hmap_node *n = orch_hmap_first(&l->files, &it); n;
             n = orch_hmap_next(&l->files, &it))
                orch_logs_close(container_of(n, struct orch_log_file, node));
        orch_list_foreach_safe(i, tmp, &l->followers)
                orch_logs_follower_cancel(orch_list_entry(i, struct orch_log_follower, link));
        uv_close((uv_handle_t *)&l->timer, on_logs_timer_close);
}

const char *orch_logs_dir(const struct orch_logs *l)
{
        return l->dir;
}
