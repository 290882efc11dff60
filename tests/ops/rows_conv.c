#include "../op_rows.h"
const kt_op_row kt_rows_conv[] = {
    {0},
};
