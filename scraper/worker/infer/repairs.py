"""The repair table: which failure of a trial calls for which change, for the constructor's arguments (INIT,
construct.py) and for forward's inputs (INPUTS, inputs.py). As paritybench's fixors (deduce_parameters.py): one
row per failure, a regex over `Kind: message`, and the change. Rows are tried in order; the first change that
makes a trial not tried yet wins, so a precise row goes before a general one. A change may still find nothing to
change (the parameter the error names is not one it can give another value): the next row is then tried.
"""

from __future__ import annotations

from scraper.worker.infer import construct as init
from scraper.worker.infer import inputs
from scraper.worker.infer import setup
from scraper.worker.infer.errors import Repair

NOT_ITERABLE = (r"'int' object is not (iterable|subscriptable)|cannot unpack non-iterable int|object of type 'int' "
                r"has no len|must be an iterable, not int|'int' object is not reversible|iterable, but got \w+|"
                r"'\w+' object is not iterable|argument of type 'int' is not iterable")
NOT_A_LAYER = (r"'(int|float|str|bool)' object is not callable|must be callable|is not a Module subclass|"
               r"must be an? (?:nn\.)?Module|is not a Module")
REFUSED_STRING = (r"KeyError|NotImplementedError|[Uu]nknown|[Uu]nsupported|not supported|[Ii]nvalid|one of|"
                  r"not implemented|[Uu]nrecognized|not in|ValueError|AssertionError")
NOT_AN_INT = (r"'float' object cannot be interpreted as an integer|must be (?:an )?int|expected int|tuple of ints, "
              r"but found element of type float|integer argument expected|type must be tuple of ints,\s*but got float")
NOT_POSITIVE = r"ZeroDivisionError|division by zero|must be positive|greater than 0|> ?0|between 0 and 1"
CHECK_FAILED = r"^(AssertionError|ValueError|RuntimeError|IndexError|KeyError):"
A_VALUE = r"(?:=|must be|should be)\s*(?:True|False|None|-?\d|'|\")"
A_KIND = r"(?:to be|must be|should be)\s+an?\s+(?:list|tuple|dict|tensor|Tensor|string|str|int|integer|float|bool)"
UNPACK = r"(?:not enough|too many) values to unpack \(expected (\d+)"
OUT_OF_RANGE_AXIS = r"[Dd]imension out of range \(expected to be in range of \[-?\d+, \d+\], but got (-?\d+)\)"
DIVISIBLE = r"(?:divisible by|multiple of|divides?|% ?|must be a power of) ?\(?(\d+)"
MISSING = r"missing \d+ required (?:positional |keyword-only )?arguments?: (.*)"
ATTRIBUTE_OF_A_VALUE = r"'(int|float|bool|str|NoneType|(?:types\.)?SimpleNamespace)' object has no attribute '(\w+)'"
FLATTENED = r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)"
A_NUMBER_NOT_A_LIST = (r"type must be tuple of ints,\s*but got list|'list' object cannot be interpreted as an integer|"
                       r"unsupported operand type\(s\) for .*'list'|not supported between instances of 'list' and")

INIT = [  # constructor arguments
    # what failure it recognises                                               what it changes
    Repair(r"unexpected keyword argument '(\w+)'",                              init.drop_keyword),
    Repair(MISSING,                                                             init.add_missing),
    Repair(r"missing 1 required positional argument: 'self'",                   init.instance_for_class),
    Repair(r"device string: (\S+)",                                             init.device_string),
    Repair(OUT_OF_RANGE_AXIS,                                                   init.axis_for_size),
    Repair(A_VALUE,                                                             init.required_value),
    Repair(A_KIND,                                                              init.required_type),
    Repair(r"^AssertionError:",                                                 init.value_the_assert_lists),
    Repair(ATTRIBUTE_OF_A_VALUE,                                                init.tensor_for_value),
    Repair(r"cannot assign '\w+' object to (?:buffer|parameter) '(\w+)'",      init.tensor_for_stored),
    Repair(r"cannot assign '[\w.]+' as parameter '\w+' \(torch\.nn\.Parameter", init.parameter_for_tensor),
    Repair(FLATTENED,                                                           init.vector_for_matrix),
    Repair(r"dtype",                                                            init.dtype_for_int),
    Repair(r"None|provided|must be given|required|is not set",                  init.provide_named),
    Repair(r"'(\w+)' object has no attribute '(\w+)'",                          init.layer_for_attribute),
    Repair(r"type object '(\w+)' has no attribute '(\w+)'",                     init.layer_for_attribute),
    Repair(r"'([\w.]+)' object has no attribute '(\w+)'",                       init.config_for_value),
    Repair(r"'([\w.]+)' object has no attribute '(get|keys|items|values)'",     init.dict_for_config),
    Repair(r"'SimpleNamespace' object is not subscriptable",                    init.dict_for_namespace),
    Repair(r"^KeyError: '(\w+)'",                                               init.key_for_dict),
    Repair(NOT_ITERABLE,                                                        init.list_for_int),
    Repair(r"^AssertionError:",                                                 init.list_for_isinstance),
    Repair(UNPACK,                                                              init.list_length),
    Repair(A_NUMBER_NOT_A_LIST,                                                 init.int_for_list),
    Repair(r"dropout probability has to be between 0 and 1, but got ([\d.]+)",   init.probability_for_dropout),
    Repair(r"__init__\(\) got an unexpected keyword argument 'inplace'",         init.activation_taking_inplace),
    Repair(NOT_A_LAYER,                                                         init.layer_for_value),
    Repair(r"Identity\.forward\(\) (got an unexpected keyword|takes)",          init.permissive_layer),
    Repair(DIVISIBLE,                                                           init.divisible),
    Repair(NOT_AN_INT,                                                          init.integer_for_float),
    Repair(NOT_POSITIVE,                                                        init.nonzero),
    Repair(REFUSED_STRING,                                                      init.other_choice),
    Repair(CHECK_FAILED,                                                        init.other_sizes),
    Repair(r"",                                                                 init.by_name_again),
]

INDEX_DTYPE = (r"Long|Int[, ]|int64|int32|integer tensors|scalar type Long|indices.*Float|Float.*indices|"
               r"index.*dtype|dtype.*index|used as indices must be long")
AS_NUMBER = (r"only integer tensors of a single element can be converted to an index|'Tensor' object cannot be "
             r"interpreted as an integer|must be int, not Tensor|received an invalid combination of arguments - "
             r"got \(Tensor")
RANK = r"\d[D-]|<= ?\d dim|\d dimensions|values to unpack \(expected|[Dd]imension out of range"
BROADCAST = (r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton "
             r"dimension (\d+)")
EXPAND = (r"expanded size of the tensor \((\d+)\) must match the existing size \((\d+)\) at non-singleton "
          r"dimension (\d+)")
EXPECTED_GOT = r"[Ee]xpected[^\d\n]{0,40}?(\d+)[^\d\n]{0,40}?got[^\d\n]{0,12}(\d+)"
A_CALL_FAILED = r"^(RuntimeError|IndexError|ValueError|TypeError|AssertionError):"
DICT_READ = r"'Tensor' object has no attribute '(keys|items|values|get)'|only integers, slices|too many indices|" \
            r"new\(\): invalid data type 'str'"

TOO_SMALL_IMAGE = (r"Output size is too small|Kernel size can't be greater than actual input size|smaller than kernel "
                   r"size|Padding size should be less than the corresponding input dimension")
TARGET_SHAPE = (r"Target size \(torch\.Size\(\[[\d, ]*\]\)\) must be the same as input size|[Tt]arget and input must "
                r"have the same number of elements")
A_CONDITION = (r"Boolean value of Tensor with more than one value is ambiguous|only one element tensors can be "
               r"converted to Python scalars|only supports 0-dimension value tensor")
NOT_A_NUMBER = (r"'(bool|int|float)' object has no attribute '\w+'|must be Tensor, not (bool|int|float)|expected "
                r"Tensor as element \d+ in argument \d+, but got (bool|int|float)")
FLOAT_WANTED = (r"\(long int\) and bias type \(float\)|got Long and Float|must be either a floating point .*Got: Long|"
                r"Float can't be cast to the desired output type Long|expected scalar type Float but found Long|"
                r"not implemented for 'Long'")

INPUTS = [  # forward's inputs
    # what failure it recognises                                               what it changes
    Repair(r"process group has not been initiali[sz]ed|init_process_group",     inputs.process_group),
    Repair(setup.CACHES_NOT_SET_UP,                                             inputs.cache_setup),
    Repair(r"cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)",             inputs.matmul_features),
    Repair(r"expected input with shape \[\*, ([\d, ]+)\]",                      inputs.norm_features),
    Repair(r"to have (\d+) channels",                                           inputs.channels),
    Repair(TOO_SMALL_IMAGE,                                                     inputs.bigger_images),
    Repair(TARGET_SHAPE,                                                        inputs.targets_like_input),
    Repair(r"'lengths' argument should be a 1D CPU int64 tensor",               inputs.lengths_for_packing),
    Repair(UNPACK,                                                              inputs.unpacked_tuple),
    Repair(RANK,                                                                inputs.rank),
    Repair(r"same number of dimensions: got (\d+) and (\d+)",                    inputs.rank_named),
    Repair(r"sizes provided \((\d+)\) must be greater or equal to the number",  inputs.rank_named),
    Repair(r"subscripts in the equation \((\d+)\) does not match the number",    inputs.rank_named),
    Repair(r"must be a matrix",                                                 inputs.matrix),
    Repair(r"repeat dims can not be smaller than number of dimensions",         inputs.fewer_dims),
    Repair(BROADCAST,                                                           inputs.mask_that_broadcasts),
    Repair(BROADCAST,                                                           inputs.broadcast),
    Repair(EXPAND,                                                              inputs.broadcast),
    Repair(r"shape '\[([-\d, ]+)\]' is invalid for input of size (\d+)",        inputs.view_size),
    Repair(EXPECTED_GOT,                                                        inputs.expected_size),
    Repair(FLOAT_WANTED,                                                        inputs.floats_for_ids),
    Repair(INDEX_DTYPE,                                                         inputs.ids_for_index),
    Repair(r"index out of range|out of bounds|index \d+ is out of bounds",      inputs.smaller_ids),
    Repair(A_CONDITION,                                                         inputs.number_for_condition),
    Repair(NOT_A_NUMBER,                                                        inputs.tensor_for_number),
    Repair(A_CALL_FAILED,                                                       inputs.optional_positions),
    Repair(AS_NUMBER,                                                           inputs.scalar_for_tensor),
    Repair(r"must be tuple of Tensors, not Tensor",                             inputs.tuple_for_tensor),
    Repair(r"None",                                                             inputs.tensor_for_none),
    Repair(r"'Tensor' object is not callable",                                  inputs.layer_for_tensor),
    Repair(DICT_READ,                                                           inputs.dict_for_tensor),
    Repair(r"'Tensor' object has no attribute '(\w+)'",                         inputs.namespace_for_tensor),
    Repair(r"fp16|bf16|half|float16|bfloat16|Half|BFloat16",                    inputs.half_precision),
    Repair(r"(?:divisible by|multiple of|divides?|% ?)\s*\(?(\d+)",             inputs.divisible_layout),
    Repair(r"",                                                                 inputs.attribute_sizes),
]
