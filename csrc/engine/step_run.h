// The run functions of the steps (exec_plan.h): what a step computes on one image, splitting
// its work over ExecContext's threads and calling the kernels of ExecContext::kernels.
#pragma once

#include "engine/exec_plan.h"
#include "engine/ops.h"

namespace qbinfer {

// The run function of a step that runs `type` alone or heads a conv chain (BCONV2D and
// DWCONV3X3 run their chain's epilogue on each block they write); nullptr for an unknown type.
StepRunFn run_fn(OpType type);

// An epilogue chain: the element-wise tail alone, in place over its first input.
void run_epilogue_chain(const Step& step, const ExecContext& ctx);

}  // namespace qbinfer
