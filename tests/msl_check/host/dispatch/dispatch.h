// <dispatch/dispatch.h> for the host syntax check: what attention_metal.mm and PyTorch's
// ATen/mps/MPSStream.h use.
#pragma once

// https://developer.apple.com/documentation/dispatch/dispatch_queue_t
typedef struct dispatch_queue_s* dispatch_queue_t;
// https://developer.apple.com/documentation/dispatch/dispatch_block_t
typedef void (^dispatch_block_t)(void);
// https://developer.apple.com/documentation/dispatch/1452870-dispatch_sync
void dispatch_sync(dispatch_queue_t queue, dispatch_block_t block);
