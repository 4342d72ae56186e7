// Include <linux/kvm.h> through here. Recent uapi headers wrap flexible arrays in
// __DECLARE_FLEX_ARRAY, whose empty struct is 1 byte in C++ (0 in C): that changes the size of
// kvm_cpuid2, kvm_msrs, kvm_xsave, ... and so the ioctl numbers built from them. Redefine it
// as a plain zero-length array (a GNU extension g++ supports) so the layout matches C.
#pragma once
#include <linux/stddef.h>
#undef __DECLARE_FLEX_ARRAY
#define __DECLARE_FLEX_ARRAY(TYPE, NAME) TYPE NAME[0]
#include <linux/kvm.h>

static_assert(sizeof(struct kvm_cpuid2) == 8, "kvm_cpuid2 must have its C layout");
static_assert(sizeof(struct kvm_msrs) == 8, "kvm_msrs must have its C layout");
