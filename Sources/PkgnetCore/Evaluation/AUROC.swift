/// Area under the ROC curve of `scores` (higher = more anomalous) against
/// `labels` (true = anomalous), as sklearn.metrics.roc_auc_score computes it:
/// the probability that a random positive outscores a random negative, a tie
/// counting one half.
///
/// Computed with the rank (Mann-Whitney U) formula in O(n log n): sort, give
/// tied scores their average rank, then
/// AUC = (sum of positive ranks - P(P+1)/2) / (P N).
///
/// Returns nil, as sklearn raises, when the area is undefined or the input
/// cannot be ranked: no positives or no negatives, lengths that differ, or a
/// non-finite score (NaN has no rank; sklearn refuses infinities too).
public func areaUnderROC(scores: [Double], labels: [Bool]) -> Double? {
    guard scores.count == labels.count, scores.allSatisfy(\.isFinite) else { return nil }
    let positives = labels.reduce(0) { $0 + ($1 ? 1 : 0) }
    let negatives = labels.count - positives
    guard positives > 0, negatives > 0 else { return nil }

    let order = scores.indices.sorted { scores[$0] < scores[$1] }
    // Sum of the positives' 1-based ranks; a run of equal scores at sorted
    // positions start..<end shares the rank (start + 1 + end) / 2. The sum is
    // a multiple of 1/2 below n^2, so exact in Double for n up to ~6*10^7.
    var positiveRankSum = 0.0
    var start = 0
    while start < order.count {
        var end = start + 1
        while end < order.count && scores[order[end]] == scores[order[start]] { end += 1 }
        var positivesInRun = 0
        for i in start..<end where labels[order[i]] { positivesInRun += 1 }
        positiveRankSum += Double(positivesInRun) * Double(start + 1 + end) / 2
        start = end
    }
    let p = Double(positives), n = Double(negatives)
    return (positiveRankSum - p * (p + 1) / 2) / (p * n)
}
