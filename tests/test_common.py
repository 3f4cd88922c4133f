"""scikit-learn's estimator checks over every public estimator, strict.

scikit-learn's checks feed tabular 2-D arrays. Our estimators read a 2-D
numeric array as rows of flattened *square* grayscale images with pixels in
[0, 1] (or integer 0-255): the checks' tables with 2, 3, 5, 10, 20 or 30
columns, or float values outside [0, 1], are refused with an error instead
of being guessed at. Each such check is listed below with its own reason
and the test that covers its contract on images; the list is strict: a
listed check that starts passing fails the run, and so does any other.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import PretrainedFeatureExtractor, TransferClassifier, TransferRegressor

from .conftest import TINY

FAST_FIT = dict(TINY, max_epochs=2, batch_size=8)

# Where each contract is tested on images instead (tests/...).
_CONTRACT = "test_estimator_contract.py"
_TRANSFER = "test_transfer.py::test_contract_on_images"


def _table(columns, check_does, covered):
    """A check that feeds a table of ``columns`` columns: not flattened square images."""
    return (f"{check_does} on a {columns}-column table; {columns} is not a perfect square, so "
            f"its rows are not flattened square images and fit raises a ValueError saying how "
            f"to reshape X. Covered on images by {covered}.")


def _pixels(check_does, covered):
    """A check whose float X lies outside [0, 1], the float pixel range."""
    return (f"{check_does} with float values outside [0, 1], the range of float pixels; fit "
            f"refuses them (ImageError: scale them, e.g. X / 255) rather than rescaling "
            f"silently. Covered on images by {covered}.")


# One reason per check, the same for every estimator it applies to. Each was
# checked to fail for exactly this reason; the checks run strict
# (xfail_strict=True), so one that starts to pass fails the run.
REASONS = {
    "check_fit_score_takes_y": _table(3, "calls fit and score", _CONTRACT),
    "check_estimators_overwrite_params": _table(
        2, "compares parameters before and after fit", f"{_CONTRACT}::"
        "test_fit_returns_self_and_keeps_params and " + _TRANSFER),
    "check_dont_overwrite_parameters": _table(
        3, "looks for public attributes set in fit", _TRANSFER),
    "check_estimators_fit_returns_self": _table(
        2, "checks that fit returns self", f"{_CONTRACT}::test_fit_returns_self_and_keeps_params"),
    "check_readonly_memmap_input": _table(
        2, "fits on read-only memory maps", f"{_CONTRACT}::test_readonly_and_fortran_inputs"),
    "check_estimators_dtypes": _table(
        5, "fits on float32, int32 and int64 tables",
        "test_inputs.py::test_every_input_form_gives_the_same_features"),
    "check_estimators_empty_data_messages": (
        "fits on arrays of shape (0, 3) and (12, 0) and expects scikit-learn's wording for "
        "empty data; 0 columns is no image and fit says so (ValueError naming the shape to "
        "use). Covered by test_inputs.py::test_bad_arrays."),
    "check_pipeline_consistency": _table(
        3, "compares the estimator alone and in a Pipeline",
        "test_extractor.py::test_pipeline_grid_search_over_nested_params"),
    "check_estimators_nan_inf": (
        "feeds NaN and inf in a 3-column table and expects scikit-learn's NaN message; the "
        "3-column table is refused first (not a flattened square image). NaN pixels are "
        "refused on images by test_reliability.py::test_fuzzed_arrays_work_or_raise_clearly."),
    "check_estimators_pickle": _table(
        3, "pickles a fitted estimator", f"{_CONTRACT}::test_pickle_round_trip_identical and "
        "test_one_answer.py"),
    "check_estimators_pickle(readonly_memmap=True)": _table(
        3, "pickles a fitted estimator and reloads it memory-mapped",
        f"{_CONTRACT}::test_pickle_round_trip_identical"),
    "check_f_contiguous_array_estimator": _table(
        3, "fits on a Fortran-ordered table", f"{_CONTRACT}::test_readonly_and_fortran_inputs"),
    "check_methods_sample_order_invariance": _table(
        3, "permutes the rows", f"{_CONTRACT}::test_sample_order_and_subset_invariance and "
        + _TRANSFER),
    "check_methods_subset_invariance": _table(
        3, "predicts on subsets of rows",
        f"{_CONTRACT}::test_sample_order_and_subset_invariance"),
    "check_fit2d_1sample": (
        "fits one row of 10 columns and expects scikit-learn's one-sample message; 10 is not "
        "a perfect square, so the row is refused as no image first. One image fits: "
        "test_reliability.py::test_fuzzed_arrays_work_or_raise_clearly."),
    "check_dict_unchanged": _table(
        3, "checks that predict leaves __dict__ unchanged",
        "test_one_answer.py::test_predict_explain_and_transform_leave_the_estimator_as_it_was"),
    "check_fit_idempotent": _table(
        2, "fits twice and compares the outputs", f"{_CONTRACT}::test_fit_idempotent_and_clone"),
    "check_fit_check_is_fitted": _table(
        2, "checks check_is_fitted before and after fit", f"{_CONTRACT}::test_not_fitted"),
    "check_n_features_in": _table(
        2, "checks n_features_in_ after fit",
        f"{_CONTRACT}::test_flattened_square_images_and_n_features_in"),
    "check_fit2d_predict1d": _table(
        3, "predicts on a 1-D row", f"{_CONTRACT}::test_flattened_square_images_and_n_features_in"),
    "check_n_features_in_after_fitting": _pixels(
        "checks the n_features_in_ error message",
        f"{_CONTRACT}::test_flattened_square_images_and_n_features_in"),
    "check_positive_only_tag_during_fit": (
        "fits on negative values and expects a message about negative values; floats outside "
        "[0, 1] are refused as float pixels instead (ImageError naming each image and the "
        "range). Covered by test_inputs.py::test_bad_arrays."),
    "check_dtype_object": (
        "fits on a 2-D object array of 10 columns; each row becomes an array of shape (10,), "
        "not an image, and fit raises an ImageError listing them. Object arrays of images "
        "are covered by test_inputs.py::test_every_input_form_gives_the_same_features."),
    "check_fit2d_1feature": _pixels(
        "fits a 1-column table (1 x 1 images)",
        "test_reliability.py::test_fuzzed_arrays_work_or_raise_clearly"),
    # transformer checks
    "check_transformer_data_not_an_array": _table(
        3, "fits on a list-like that is not an array",
        "test_inputs.py::test_every_input_form_gives_the_same_features"),
    "check_transformer_general": _table(
        3, "checks fit_transform against fit then transform", _CONTRACT),
    "check_transformer_general(readonly_memmap=True)": _table(
        3, "checks fit_transform against fit then transform on read-only data",
        f"{_CONTRACT}::test_readonly_and_fortran_inputs"),
    "check_transformer_preserve_dtypes": _table(
        3, "checks the output dtype", f"{_CONTRACT}::test_output_dtype_shape_and_names"),
    # supervised checks
    "check_sample_weights_pandas_series": _table(
        2, "passes sample_weight as a pandas Series",
        "test_core.py::test_bug_zero_sample_weight_is_the_same_as_leaving_the_image_out"),
    "check_sample_weights_not_an_array": _table(
        2, "passes sample_weight as a list-like",
        "test_transfer.py::test_class_weight_and_sample_weight"),
    "check_sample_weights_list": _table(
        3, "passes sample_weight as a list",
        "test_transfer.py::test_class_weight_and_sample_weight"),
    "check_all_zero_sample_weights_error": (
        "fits a 20-column table with all-zero weights and expects scikit-learn's message; "
        "the table is refused first (not a flattened square image). Covered on images by "
        "test_core.py::test_scaling_every_weight_changes_nothing."),
    "check_sample_weights_shape": _table(
        2, "passes sample_weight of the wrong shape",
        "test_transfer.py::test_class_weight_and_sample_weight"),
    "check_sample_weights_not_overwritten": _table(
        2, "checks that fit leaves sample_weight unchanged",
        "test_transfer.py::test_class_weight_and_sample_weight"),
    "check_sample_weight_equivalence_on_dense_data": _table(
        30, "compares integer weights with repeated rows",
        "test_transfer.py::test_class_weight_and_sample_weight and test_core.py::"
        "test_bug_zero_sample_weight_is_the_same_as_leaving_the_image_out"),
    "check_supervised_y_2d": _table(
        3, "fits a column-vector y and expects a warning",
        "test_multitask.py (a 2-D y is several targets)"),
    "check_requires_y_none": (
        "fits a 2-column table with y=None and expects scikit-learn's 'requires y' message; "
        "the table is refused first (not a flattened square image). y=None on images raises "
        "'requires y to be passed': test_transfer.py::test_bad_input."),
    # classifier checks
    "check_classifier_data_not_an_array": _table(
        2, "fits on list-likes that are not arrays", _TRANSFER),
    "check_classifiers_one_label": (
        "fits a 3-column table of one class and expects an error naming the class; the "
        "table is refused first. One class on images: test_transfer.py::test_bad_input."),
    "check_classifiers_one_label_sample_weights": (
        "fits a 10-column table whose weights leave one class and expects an error naming "
        "the class or predictions of that class; the table is refused first. On images, "
        "weights leaving one class train on it: test_transfer.py::"
        "test_weights_leaving_one_class_predict_it."),
    "check_classifiers_classes": _table(
        2, "fits string and integer labels", "test_transfer.py::test_fit_predict_string_labels"),
    "check_classifiers_train": _table(2, "trains on blobs", _TRANSFER),
    "check_classifiers_train(readonly_memmap=True)": _table(
        2, "trains on read-only blobs", f"{_CONTRACT}::test_readonly_and_fortran_inputs"),
    "check_classifiers_train(readonly_memmap=True,X_dtype=float32)": _table(
        2, "trains on read-only float32 blobs", f"{_CONTRACT}::test_readonly_and_fortran_inputs"),
    "check_classifiers_regression_target": (
        "fits a 10-column table with a continuous y and expects 'Unknown label type'; the "
        "table is refused first. A continuous y on images raises 'Unknown label type': "
        "test_transfer.py::test_bad_input."),
    "check_class_weight_classifiers": _table(
        2, "checks that class_weight shifts predictions",
        "test_transfer.py::test_class_weight_and_sample_weight and test_core.py::"
        "test_bug_class_weight_dict_with_string_labels_shifts_predictions"),
    "check_classifier_multioutput": _table(
        20, "fits a multilabel y", "test_multitask.py::test_multilabel_indicator_outputs"),
    # regressor checks
    "check_regressors_train": _table(10, "trains on a regression table", _TRANSFER),
    "check_regressors_train(readonly_memmap=True)": _table(
        10, "trains on a read-only regression table",
        f"{_CONTRACT}::test_readonly_and_fortran_inputs"),
    "check_regressors_train(readonly_memmap=True,X_dtype=float32)": _table(
        10, "trains on a read-only float32 regression table",
        f"{_CONTRACT}::test_readonly_and_fortran_inputs"),
    "check_regressor_data_not_an_array": _table(
        10, "fits on list-likes that are not arrays", _TRANSFER),
    "check_regressors_int": _table(
        10, "compares integer and float targets",
        "test_transfer.py::test_regressor_on_a_real_target"),
    "check_regressor_multioutput": _table(
        10, "fits a 2-D y", "test_multitask.py::test_regressor_task_weights"),
    "check_regressors_no_decision_function": _pixels(
        "checks that a regressor has no decision_function",
        "test_transfer.py::test_regressor_on_a_real_target"),
}

_COMMON = [
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_estimators_dtypes",
    "check_estimators_empty_data_messages", "check_pipeline_consistency",
    "check_estimators_nan_inf", "check_estimators_pickle",
    "check_estimators_pickle(readonly_memmap=True)", "check_f_contiguous_array_estimator",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_fit2d_1sample", "check_dict_unchanged", "check_fit_idempotent",
    "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d",
    "check_n_features_in_after_fitting", "check_positive_only_tag_during_fit",
    "check_dtype_object", "check_fit2d_1feature",
]
_SUPERVISED = _COMMON + [
    "check_sample_weights_pandas_series", "check_sample_weights_not_an_array",
    "check_sample_weights_list", "check_all_zero_sample_weights_error",
    "check_sample_weights_shape", "check_sample_weights_not_overwritten",
    "check_sample_weight_equivalence_on_dense_data", "check_supervised_y_2d",
    "check_requires_y_none",
]
EXPECTED_FAILED_CHECKS = {
    name: {check: REASONS[check] for check in checks}
    for name, checks in {
        "PretrainedFeatureExtractor": _COMMON + [
            "check_transformer_data_not_an_array", "check_transformer_general",
            "check_transformer_general(readonly_memmap=True)",
            "check_transformer_preserve_dtypes"],
        "TransferClassifier": _SUPERVISED + [
            "check_classifier_data_not_an_array", "check_classifiers_one_label",
            "check_classifiers_one_label_sample_weights", "check_classifiers_classes",
            "check_classifiers_train", "check_classifiers_train(readonly_memmap=True)",
            "check_classifiers_train(readonly_memmap=True,X_dtype=float32)",
            "check_classifiers_regression_target", "check_class_weight_classifiers",
            "check_classifier_multioutput"],
        "TransferRegressor": _SUPERVISED + [
            "check_regressors_train", "check_regressors_train(readonly_memmap=True)",
            "check_regressors_train(readonly_memmap=True,X_dtype=float32)",
            "check_regressor_data_not_an_array", "check_regressors_int",
            "check_regressor_multioutput", "check_regressors_no_decision_function"],
    }.items()
}


@parametrize_with_checks(
    [
        PretrainedFeatureExtractor(**TINY),
        TransferClassifier(**FAST_FIT),
        TransferRegressor(**FAST_FIT),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}),
    xfail_strict=True,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
