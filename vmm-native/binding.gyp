{
  "targets": [
    {
      "target_name": "stencil_vmm",
      "sources": [
        "src/addon.cc",
        "src/error.cc",
        "src/event_loop.cc",
        "src/exit_stats.cc",
        "src/kvm.cc",
        "src/memory.cc",
        "src/vm.cc",
        "src/arch/x86/acpi.cc",
        "src/arch/x86/boot_params.cc",
        "src/arch/x86/cpu_setup.cc",
        "src/arch/x86/cpuid.cc",
        "src/arch/x86/mptable.cc",
        "src/devices/acpi_pm.cc",
        "src/devices/bus.cc",
        "src/devices/i8042.cc",
        "src/devices/serial.cc",
        "src/loader/kernel_image.cc",
        "src/virtio/blk.cc",
        "src/virtio/mmio.cc",
        "src/virtio/p9/device.cc",
        "src/virtio/p9/host.cc",
        "src/virtio/p9/ops.cc",
        "src/virtio/p9/server.cc",
        "src/virtio/p9/wire.cc",
        "src/virtio/queue.cc",
        "src/virtio/rng.cc",
        "src/virtio/vsock/connection.cc",
        "src/virtio/vsock/device.cc",
        "src/virtio/vsock/muxer.cc",
        "src/virtio/vsock/packet.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    }
  ]
}
