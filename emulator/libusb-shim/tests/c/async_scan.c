/* An unmodified libusb-1.0 C program (built against Debian's libusb.h) that drives the emulated
 * scanner with the asynchronous API: a transfer that times out, a pending transfer that is
 * cancelled, an interrupt transfer resubmitted from its own callback, a full scan read with
 * queued bulk transfers (bytes checked against the test pattern, emulator/PROTOCOL.md §7), and a
 * scan cancelled mid-way with the device back to idle. Prints one line per check; exit 0 when all
 * pass. Run with LD_LIBRARY_PATH pointing at the shim and SCANLAB_USBIP at the emulator. */
#include <libusb-1.0/libusb.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/time.h>

/* The layouts the shim mirrors (its src/abi.rs asserts the same numbers). */
_Static_assert(sizeof(struct libusb_device_descriptor) == 18, "device descriptor");
_Static_assert(offsetof(struct libusb_device_descriptor, idVendor) == 8, "idVendor");
_Static_assert(offsetof(struct libusb_device_descriptor, bNumConfigurations) == 17, "bNumConfigurations");
_Static_assert(sizeof(struct libusb_endpoint_descriptor) == 32, "endpoint descriptor");
_Static_assert(offsetof(struct libusb_endpoint_descriptor, extra) == 16, "endpoint extra");
_Static_assert(offsetof(struct libusb_endpoint_descriptor, extra_length) == 24, "endpoint extra_length");
_Static_assert(sizeof(struct libusb_interface_descriptor) == 40, "interface descriptor");
_Static_assert(offsetof(struct libusb_interface_descriptor, endpoint) == 16, "interface endpoint");
_Static_assert(offsetof(struct libusb_interface_descriptor, extra_length) == 32, "interface extra_length");
_Static_assert(sizeof(struct libusb_interface) == 16, "interface");
_Static_assert(offsetof(struct libusb_interface, num_altsetting) == 8, "num_altsetting");
_Static_assert(sizeof(struct libusb_config_descriptor) == 40, "config descriptor");
_Static_assert(offsetof(struct libusb_config_descriptor, interface) == 16, "config interface");
_Static_assert(offsetof(struct libusb_config_descriptor, extra) == 24, "config extra");
_Static_assert(sizeof(struct libusb_transfer) == 64, "transfer");
_Static_assert(offsetof(struct libusb_transfer, timeout) == 12, "transfer timeout");
_Static_assert(offsetof(struct libusb_transfer, status) == 16, "transfer status");
_Static_assert(offsetof(struct libusb_transfer, actual_length) == 24, "transfer actual_length");
_Static_assert(offsetof(struct libusb_transfer, callback) == 32, "transfer callback");
_Static_assert(offsetof(struct libusb_transfer, buffer) == 48, "transfer buffer");
_Static_assert(offsetof(struct libusb_transfer, num_iso_packets) == 56, "transfer num_iso_packets");
_Static_assert(offsetof(struct libusb_transfer, iso_packet_desc) == 60, "transfer iso_packet_desc");
_Static_assert(sizeof(struct libusb_iso_packet_descriptor) == 12, "iso packet");
_Static_assert(sizeof(struct libusb_version) == 24, "version");
_Static_assert(sizeof(struct libusb_pollfd) == 8, "pollfd");

static int failures;
#define CHECK(cond, ...)                                                                        \
    do {                                                                                        \
        if (cond) {                                                                             \
            printf("ok   ");                                                                    \
        } else {                                                                                \
            printf("FAIL ");                                                                    \
            failures++;                                                                         \
        }                                                                                       \
        printf(__VA_ARGS__);                                                                    \
        printf("\n");                                                                           \
        fflush(stdout);                                                                         \
    } while (0)

static libusb_context *ctx;
static libusb_device_handle *h;

static int ctrl_in(uint8_t req, uint8_t *buf, uint16_t len) {
    return libusb_control_transfer(h, 0xc1, req, 0, 0, buf, len, 1000);
}
static int ctrl_out(uint8_t req, uint8_t *buf, uint16_t len) {
    return libusb_control_transfer(h, 0x41, req, 0, 0, buf, len, 1000);
}
static uint32_t le32(const uint8_t *b) { return b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24; }
static uint16_t le16(const uint8_t *b) { return b[0] | b[1] << 8; }

/* One transfer's completion record. */
struct done {
    int fired;
    int status;
    int actual;
};

static void record_cb(struct libusb_transfer *t) {
    struct done *d = t->user_data;
    d->fired = 1;
    d->status = t->status;
    d->actual = t->actual_length;
}

/* Interrupt IN 0x83: resubmitted from its own callback until told to stop. */
static int irq_events[64];
static int irq_count, irq_resubmits, irq_stop, irq_final_status = -1, irq_done;
static void irq_cb(struct libusb_transfer *t) {
    if (t->status == LIBUSB_TRANSFER_COMPLETED && t->actual_length == 8) {
        if (irq_count < 64)
            irq_events[irq_count] = t->buffer[0];
        irq_count++;
    }
    if (t->status == LIBUSB_TRANSFER_COMPLETED && !irq_stop) {
        if (libusb_submit_transfer(t) == 0) {
            irq_resubmits++;
            return;
        }
    }
    irq_final_status = t->status;
    irq_done = 1;
}
static int saw_event(int code) {
    for (int i = 0; i < irq_count && i < 64; i++)
        if (irq_events[i] == code)
            return 1;
    return 0;
}

/* Queued bulk reads of one page. */
#define QUEUE 3
static uint8_t *page;
static size_t page_len, page_got;
static int bulk_inflight, bulk_errors;
static void bulk_cb(struct libusb_transfer *t) {
    bulk_inflight--;
    if (t->status != LIBUSB_TRANSFER_COMPLETED) {
        bulk_errors++;
        return;
    }
    size_t n = (size_t)t->actual_length;
    if (page_got + n > page_len)
        n = page_len - page_got;
    memcpy(page + page_got, t->buffer, n);
    page_got += n;
    /* Keep QUEUE reads queued while bytes are still due beyond those in flight. */
    if (page_got + (size_t)bulk_inflight * 3200 < page_len) {
        if (libusb_submit_transfer(t) == 0)
            bulk_inflight++;
    }
}

static int pattern_ok(const uint8_t *data, uint32_t bpl, uint32_t lines) {
    for (uint32_t l = 0; l < lines; l++) {
        const uint8_t *row = data + (size_t)l * bpl;
        uint8_t head[8] = {0x53, 0x4c, 0, 0, l >> 24, l >> 16, l >> 8, l};
        for (uint32_t i = 0; i < bpl; i++) {
            uint8_t want = i < 8 ? head[i] : (uint8_t)((l * 7 + i * 13) % 251);
            if (row[i] != want) {
                printf("     mismatch at line %u byte %u: %02x != %02x\n", l, i, row[i], want);
                return 0;
            }
        }
    }
    return 1;
}

static void pump_until(int *flag, int ms) {
    struct timeval tv = {0, 20000};
    for (int i = 0; i < ms / 20 && !*flag; i++)
        libusb_handle_events_timeout_completed(ctx, &tv, flag);
}

int main(void) {
    CHECK(libusb_init(&ctx) == 0, "libusb_init");
    libusb_device **list;
    ssize_t n = libusb_get_device_list(ctx, &list);
    CHECK(n == 1, "one device listed (%zd)", n);
    if (n < 1)
        return 1;
    struct libusb_device_descriptor dd;
    libusb_get_device_descriptor(list[0], &dd);
    CHECK(dd.idVendor == 0x5ca1, "vendor %04x", dd.idVendor);
    CHECK(libusb_open(list[0], &h) == 0, "open");
    libusb_free_device_list(list, 1);
    CHECK(libusb_claim_interface(h, 0) == 0, "claim interface 0");

    const struct libusb_pollfd **fds = libusb_get_pollfds(ctx);
    CHECK(fds && fds[0] && !fds[1] && fds[0]->events == POLLIN, "one pollable fd");
    libusb_free_pollfds(fds);

    /* 1. A bulk read while idle times out (no band is ever ready). */
    uint8_t buf[4096];
    struct done d1 = {0};
    struct libusb_transfer *t1 = libusb_alloc_transfer(0);
    libusb_fill_bulk_transfer(t1, h, 0x81, buf, sizeof buf, record_cb, &d1, 100);
    CHECK(libusb_submit_transfer(t1) == 0, "submit bulk IN with 100 ms timeout");
    CHECK(libusb_submit_transfer(t1) == LIBUSB_ERROR_BUSY, "resubmitting an in-flight transfer is BUSY");
    struct timeval next;
    CHECK(libusb_get_next_timeout(ctx, &next) == 1, "a timeout is pending");
    pump_until(&d1.fired, 3000);
    CHECK(d1.fired && d1.status == LIBUSB_TRANSFER_TIMED_OUT && d1.actual == 0,
          "timed out: status %d (%s), actual %d", d1.status, libusb_error_name(d1.status), d1.actual);

    /* 2. A pending read without timeout is cancelled. */
    struct done d2 = {0};
    libusb_fill_bulk_transfer(t1, h, 0x81, buf, sizeof buf, record_cb, &d2, 0);
    CHECK(libusb_submit_transfer(t1) == 0, "submit bulk IN without timeout");
    struct timeval zero = {0, 0};
    libusb_handle_events_timeout(ctx, &zero);
    CHECK(!d2.fired, "still pending");
    CHECK(libusb_cancel_transfer(t1) == 0, "cancel");
    CHECK(libusb_cancel_transfer(t1) == LIBUSB_ERROR_NOT_FOUND, "second cancel is NOT_FOUND");
    pump_until(&d2.fired, 3000);
    CHECK(d2.fired && d2.status == LIBUSB_TRANSFER_CANCELLED, "cancelled: status %d (%s)", d2.status,
          libusb_error_name(d2.status));
    CHECK(libusb_cancel_transfer(t1) == LIBUSB_ERROR_NOT_FOUND, "cancel after completion is NOT_FOUND");
    libusb_free_transfer(t1);

    /* 3. Interrupt IN resubmitted from its callback collects the scan's events. */
    uint8_t ibuf[16];
    struct libusb_transfer *irq = libusb_alloc_transfer(0);
    libusb_fill_interrupt_transfer(irq, h, 0x83, ibuf, 8, irq_cb, NULL, 0);
    CHECK(libusb_submit_transfer(irq) == 0, "submit interrupt IN 0x83");

    /* 4. A full scan read with QUEUE bulk transfers in flight. */
    uint8_t caps[32];
    CHECK(ctrl_in(0x01, caps, 32) == 32 && le16(caps) == 0x0100, "GET_CAPABILITIES, version 1.00");
    uint8_t params[24] = {100, 0, 1, 0};
    params[12] = 200;          /* width 200 px */
    params[16] = 100;          /* height 100 lines */
    params[20] = 1;            /* one page */
    CHECK(ctrl_out(0x02, params, 24) == 24, "SET_PARAMS 100 dpi gray8 200x100");
    uint8_t rep[40];
    CHECK(ctrl_in(0x03, rep, 40) == 40, "GET_PARAMS");
    uint32_t bpl = le32(rep + 24), lines = le32(rep + 28), band = le32(rep + 36);
    CHECK(bpl == 200 && lines == 100 && band == 3200, "bpl %u lines %u band %u", bpl, lines, band);
    page_len = (size_t)bpl * lines;
    page = calloc(1, page_len);
    CHECK(ctrl_out(0x04, NULL, 0) == 0, "START_SCAN");
    int L = (int)((band / 512 + 1) * 512);
    struct libusb_transfer *bt[QUEUE];
    uint8_t *bbuf[QUEUE];
    for (int i = 0; i < QUEUE; i++) {
        bbuf[i] = malloc((size_t)L);
        bt[i] = libusb_alloc_transfer(0);
        libusb_fill_bulk_transfer(bt[i], h, 0x81, bbuf[i], L, bulk_cb, NULL, 5000);
        if (libusb_submit_transfer(bt[i]) == 0)
            bulk_inflight++;
    }
    CHECK(bulk_inflight == QUEUE, "%d bulk reads queued", QUEUE);
    for (int i = 0; i < 500 && (bulk_inflight > 0 || !saw_event(4)); i++) {
        struct timeval tv = {0, 20000};
        libusb_handle_events_timeout(ctx, &tv);
    }
    CHECK(bulk_errors == 0 && page_got == page_len, "page read: %zu of %zu bytes, %d errors", page_got,
          page_len, bulk_errors);
    CHECK(pattern_ok(page, bpl, lines), "bytes equal the test pattern");
    CHECK(saw_event(1) && saw_event(2) && saw_event(4), "events ScanStarted, BandReady, ScanComplete (%d)",
          irq_count);
    CHECK(irq_resubmits >= 3, "interrupt transfer resubmitted from its callback (%d times)", irq_resubmits);

    /* 5. A second scan, cancelled after its first band. */
    CHECK(ctrl_out(0x04, NULL, 0) == 0, "START_SCAN again");
    int got = 0;
    int r = libusb_bulk_transfer(h, 0x81, bbuf[0], L, &got, 3000);
    CHECK(r == 0 && got == 3200, "first band read synchronously (%d, %d bytes)", r, got);
    struct done dc[QUEUE];
    memset(dc, 0, sizeof dc);
    for (int i = 0; i < QUEUE; i++) {
        libusb_fill_bulk_transfer(bt[i], h, 0x81, bbuf[i], L, record_cb, &dc[i], 0);
        libusb_submit_transfer(bt[i]);
    }
    /* Cancel at once: a transfer not yet delivered ends CANCELLED, as on Linux. */
    int cancelled = 0, completed = 0;
    for (int i = 0; i < QUEUE; i++)
        libusb_cancel_transfer(bt[i]);
    for (int i = 0; i < QUEUE; i++) {
        pump_until(&dc[i].fired, 3000);
        if (dc[i].status == LIBUSB_TRANSFER_CANCELLED)
            cancelled++;
        else if (dc[i].status == LIBUSB_TRANSFER_COMPLETED)
            completed++;
    }
    CHECK(cancelled >= 1 && cancelled + completed == QUEUE, "queued reads ended: %d cancelled, %d completed",
          cancelled, completed);
    uint8_t cancel[6] = {0x01, 0x40, 7, 0, 0, 0};
    CHECK(libusb_control_transfer(h, 0x21, 0x64, 0, 0, cancel, 6, 1000) == 6, "CANCEL 0x64");
    uint8_t st[8];
    int polls = 0;
    do {
        r = ctrl_in(0x67, st, 8);
        polls++;
    } while (r >= 4 && le16(st + 2) == 0x2019 && polls < 2000);
    CHECK(r >= 4 && le16(st + 2) == 0x2001, "GET_DEVICE_STATUS OK after %d polls", polls);
    uint8_t ss[28];
    CHECK(ctrl_in(0x05, ss, 28) == 28 && ss[0] == 0 && ss[1] == 1, "idle, error host-cancel (state %d error %d)",
          ss[0], ss[1]);
    got = -1;
    r = libusb_bulk_transfer(h, 0x81, bbuf[0], L, &got, 100);
    CHECK(r == LIBUSB_ERROR_TIMEOUT && got == 0, "no byte of the cancelled job (%s, %d)", libusb_error_name(r), got);

    /* Stop the interrupt loop: its pending transfer is cancelled. */
    irq_stop = 1;
    CHECK(libusb_cancel_transfer(irq) == 0, "cancel the interrupt transfer");
    pump_until(&irq_done, 3000);
    CHECK(irq_final_status == LIBUSB_TRANSFER_CANCELLED, "interrupt transfer cancelled (%d)", irq_final_status);
    libusb_free_transfer(irq);
    for (int i = 0; i < QUEUE; i++) {
        libusb_free_transfer(bt[i]);
        free(bbuf[i]);
    }
    free(page);
    CHECK(libusb_release_interface(h, 0) == 0, "release interface 0");
    libusb_close(h);
    libusb_exit(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
