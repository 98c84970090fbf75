// Builds the bunpy shim (shim/*.c) into a shared library linked against one libpython.
//
//   zig build -Drelease=true -Dpy-include=DIR -Dpy-libdir=DIR -Dpy-lib=python3.13
//
// src/build.ts runs this once per Python and caches the result. Written for zig 0.11 (the
// one on npm) and newer: APIs that changed are picked by zig version at comptime.
const std = @import("std");
const builtin = @import("builtin");

const new_api = builtin.zig_version.order(std.SemanticVersion.parse("0.12.0") catch unreachable) != .lt;

const sources = [_][]const u8{
    "shim/runtime.c",
    "shim/io.c",
    "shim/codec.c",
    "shim/errors.c",
    "shim/ops.c",
    "shim/module.c",
    "shim/reactor.c",
    "shim/timers.c",
    "shim/handles.c",
    "shim/loop.c",
    "shim/bench.c",
    "shim/context.c",
    "shim/request.c",
    "shim/jscall.c",
    "shim/sandbox.c",
};

// Fact 7 of DESIGN.md: without -fno-sanitize=undefined zig traps on UB checks in C.
const cflags = [_][]const u8{
    "-std=c11",
    "-D_GNU_SOURCE",
    "-fno-sanitize=undefined",
    "-fvisibility=hidden",
    "-fno-strict-aliasing",
    "-Wall",
    "-Wno-unused-function",
};

fn lazyPath(b: *std.Build, path: []const u8) std.Build.LazyPath {
    _ = b;
    if (comptime new_api) return .{ .cwd_relative = path };
    return .{ .path = path };
}

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{ .preferred_optimize_mode = .ReleaseFast });
    const py_include = b.option([]const u8, "py-include", "Python include directory (sysconfig 'include')") orelse
        @panic("missing -Dpy-include");
    const py_libdir = b.option([]const u8, "py-libdir", "directory holding libpython (sysconfig LIBDIR)") orelse
        @panic("missing -Dpy-libdir");
    const py_lib = b.option([]const u8, "py-lib", "library name without lib prefix, e.g. python3.13") orelse
        @panic("missing -Dpy-lib");

    const lib = if (comptime new_api)
        b.addSharedLibrary(.{ .name = "bunpy", .target = target, .optimize = optimize, .link_libc = true })
    else
        b.addSharedLibrary(.{ .name = "bunpy", .target = target, .optimize = optimize });

    if (comptime new_api) {
        lib.addCSourceFiles(.{ .files = &sources, .flags = &cflags });
    } else {
        lib.addCSourceFiles(&sources, &cflags);
        lib.linkLibC();
    }
    lib.addIncludePath(lazyPath(b, py_include));
    lib.addLibraryPath(lazyPath(b, py_libdir));
    lib.addRPath(lazyPath(b, py_libdir));
    lib.linkSystemLibrary(py_lib);
    b.installArtifact(lib);
}
