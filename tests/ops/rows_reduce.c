#include "../op_rows.h"
const kt_op_row kt_rows_reduce[] = {
    {0},
};
