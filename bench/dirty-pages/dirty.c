/* How to find the pages of a guest's linear memory written since the last
 * checkpoint, measured: three ways over one anonymous mapping, the way a
 * wasmtime linear memory is one.
 *
 *   hash     hash every 4 KiB page and compare with the hashes of last time
 *   softdirty  clear the soft-dirty bits (/proc/self/clear_refs, for the
 *            whole process), then read them from /proc/self/pagemap
 *   uffd-wp  write-protect the range through userfaultfd in asynchronous
 *            mode (the kernel resolves the faults itself, Linux 6.7+), then
 *            PAGEMAP_SCAN: the written pages, re-protected in the same call
 *
 * Usage: dirty MIB PERCENT ROUNDS. Each round writes PERCENT of the pages
 * at random, then times finding them (and for uffd-wp, the writes too).
 * Build: cc -O2 -o dirty dirty.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* From the kernel's UAPI (linux/fs.h, linux/userfaultfd.h), newer than
 * the headers installed here. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
struct page_region { uint64_t start, end, categories; };
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#define PAGE_IS_WRITTEN (1 << 1)

#define PAGE 4096UL

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static uint64_t hash_page(const uint64_t *p) {
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < PAGE / 8; i += 4) {
        h = (h ^ p[i]) * 0xff51afd7ed558ccdULL;
        h ^= (p[i + 1] + p[i + 2]) * 0xc4ceb9fe1a85ec53ULL ^ p[i + 3];
    }
    return h;
}

static void write_some(uint8_t *mem, size_t pages, size_t count, unsigned *seed) {
    for (size_t i = 0; i < count; i++) {
        size_t page = (size_t)rand_r(seed) % pages;
        mem[page * PAGE + (size_t)rand_r(seed) % PAGE] += 1;
    }
}

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MIB PERCENT ROUNDS\n", argv[0]);
        return 2;
    }
    size_t bytes = strtoul(argv[1], 0, 10) << 20, pages = bytes / PAGE;
    size_t count = pages * strtoul(argv[2], 0, 10) / 100;
    int rounds = atoi(argv[3]);
    unsigned seed = 1;
    uint8_t *mem = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) die("mmap");
    for (size_t i = 0; i < bytes; i += PAGE) mem[i] = (uint8_t)i;
    printf("%zu MiB, %zu pages, %zu writes a round (%s %%)\n", bytes >> 20, pages, count, argv[2]);

    /* hash */
    uint64_t *hashes = calloc(pages, 8);
    for (size_t p = 0; p < pages; p++) hashes[p] = hash_page((uint64_t *)(mem + p * PAGE));
    double best = 1e9;
    size_t found = 0;
    for (int r = 0; r < rounds; r++) {
        write_some(mem, pages, count, &seed);
        double t = now_ms();
        found = 0;
        for (size_t p = 0; p < pages; p++) {
            uint64_t h = hash_page((uint64_t *)(mem + p * PAGE));
            if (h != hashes[p]) { hashes[p] = h; found++; }
        }
        t = now_ms() - t;
        if (t < best) best = t;
    }
    printf("hash:      %8.2f ms to find %zu pages\n", best, found);

    /* soft-dirty */
    int clear = open("/proc/self/clear_refs", O_WRONLY), pagemap = open("/proc/self/pagemap", O_RDONLY);
    if (clear < 0 || pagemap < 0) die("open /proc/self");
    uint64_t *entries = malloc(pages * 8);
    best = 1e9;
    for (int r = 0; r < rounds; r++) {
        if (pwrite(clear, "4", 1, 0) != 1) die("clear_refs");
        write_some(mem, pages, count, &seed);
        double t = now_ms();
        if (pread(pagemap, entries, pages * 8, (off_t)((uintptr_t)mem / PAGE * 8)) != (ssize_t)(pages * 8)) die("pagemap");
        found = 0;
        for (size_t p = 0; p < pages; p++) found += (entries[p] >> 55) & 1;
        t = now_ms() - t;
        if (t < best) best = t;
    }
    double c = now_ms();
    if (pwrite(clear, "4", 1, 0) != 1) die("clear_refs");
    c = now_ms() - c;
    printf("softdirty: %8.2f ms to find %zu pages (+ %.2f ms to clear, for the whole process)\n", best, found, c);

    /* userfaultfd write protection, asynchronous, and PAGEMAP_SCAN */
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev < 0) die("userfaultfd");
        uffd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        if (uffd < 0) die("USERFAULTFD_IOC_NEW");
    }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
    if (ioctl(uffd, UFFDIO_API, &api)) die("UFFDIO_API (WP_ASYNC needs Linux 6.7)");
    struct uffdio_register reg = {.range = {(uintptr_t)mem, bytes}, .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) die("UFFDIO_REGISTER");
    double plain = now_ms();
    write_some(mem, pages, count, &seed); /* not protected yet: no faults */
    plain = now_ms() - plain;
    struct uffdio_writeprotect wp = {.range = {(uintptr_t)mem, bytes}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
    double protect = now_ms();
    if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp)) die("UFFDIO_WRITEPROTECT");
    protect = now_ms() - protect;
    struct page_region *regions = malloc(pages * sizeof *regions);
    double best_writes = 1e9;
    best = 1e9;
    for (int r = 0; r < rounds; r++) {
        double w = now_ms();
        write_some(mem, pages, count, &seed);
        w = now_ms() - w;
        if (w < best_writes) best_writes = w;
        struct pm_scan_arg arg = {
            .size = sizeof arg, .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            .start = (uintptr_t)mem, .end = (uintptr_t)mem + bytes,
            .vec = (uintptr_t)regions, .vec_len = pages,
            .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
        };
        double t = now_ms();
        long n = ioctl(pagemap, PAGEMAP_SCAN, &arg);
        if (n < 0) die("PAGEMAP_SCAN");
        found = 0;
        for (long i = 0; i < n; i++) found += (regions[i].end - regions[i].start) / PAGE;
        t = now_ms() - t;
        if (t < best) best = t;
    }
    printf("uffd-wp:   %8.2f ms to find and re-protect %zu pages (protecting all took %.2f ms once); "
           "the writes took %.2f ms protected, %.2f ms unprotected\n", best, found, protect, best_writes, plain);
    return 0;
}
