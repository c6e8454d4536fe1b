// <Foundation/Foundation.h> for the host syntax check (tests/msl_check/check_host.py): exactly
// what attention_metal.mm and PyTorch's ATen/mps headers use, each as Apple documents it (the
// reference above each declaration). Nothing is implemented: the .mm is only type-checked. A
// method that is not here is a compile error, so do not add one that Apple does not document.
#pragma once
#include <objc/objc.h>  // id, Class, SEL, BOOL, nil (GNU Objective-C runtime headers)
#include <stddef.h>
#include <stdint.h>

// Apple's Foundation brings in libdispatch (ATen/mps/MPSStream.h relies on it).
#include <dispatch/dispatch.h>

// https://developer.apple.com/documentation/objectivec/nsuinteger
typedef unsigned long NSUInteger;
// https://developer.apple.com/documentation/objectivec/nsinteger
typedef long NSInteger;

// https://developer.apple.com/documentation/objectivec/nsobjectprotocol
@protocol NSObject
@end

// https://developer.apple.com/documentation/objectivec/nsobject
__attribute__((objc_root_class))
@interface NSObject <NSObject> {
  Class isa;
}
// https://developer.apple.com/documentation/objectivec/nsobject/new()
+ (instancetype)new;
// https://developer.apple.com/documentation/objectivec/nsobject/alloc()
+ (instancetype)alloc;
// https://developer.apple.com/documentation/objectivec/nsobject/init()
- (instancetype)init;
@end

// https://developer.apple.com/documentation/foundation/nsstring
@interface NSString : NSObject
// https://developer.apple.com/documentation/foundation/nsstring/init(utf8string:)
+ (instancetype)stringWithUTF8String:(const char*)nullTerminatedCString;
// https://developer.apple.com/documentation/foundation/nsstring/utf8string
@property(readonly) const char* UTF8String;
@end

// https://developer.apple.com/documentation/foundation/nserror
@interface NSError : NSObject
// https://developer.apple.com/documentation/foundation/nserror/localizeddescription
@property(readonly, copy) NSString* localizedDescription;
@end

// https://developer.apple.com/documentation/foundation/nsdictionary (ATen/mps/MPSStream.h)
@interface NSDictionary : NSObject
@end
